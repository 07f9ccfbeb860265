"""The `oci-unpack` command line: parse options, call the API, report errors in one line.

Only click and this module load at start-up; what a command needs is imported when it
runs (`oci-unpack --help` reads no image code).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

import click

from unpack import __version__
from unpack.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    Interrupted,
    UnpackError,
    UsageError,
)

PROG = "oci-unpack"
HELP_HINT = f"Try '{PROG} --help' for help."

EXIT_CODES_HELP = """\b
Exit codes:
  0    the bundle is complete at DIR
  2    usage error (bad option or argument, malformed policy)
  3    bad image: malformed, corrupt, unsupported, or failing verification
  4    filesystem error at the destination (exists, permission, disk full)
  5    registry unreachable or refusing (connection, TLS, authentication)
  6    the signature policy rejects the image (nothing is written)
  70   internal error (a bug: please report it with --debug output)
  130  interrupted (SIGINT/SIGTERM); nothing is left at DIR"""


class _DefaultToUnpack(click.Group):
    """`oci-unpack IMAGE DIR` means `oci-unpack unpack IMAGE DIR`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # (shell completion parses resiliently)
            raise click.UsageError("give IMAGE and DIR", ctx)
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help",
                                                                     "--version"):
            args = ["unpack", *args]
        return super().parse_args(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Report click's usage errors as one line and a pointer to --help (exit 2)."""
        try:
            return super().main(*args, prog_name=PROG, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            _fail("interrupted", EXIT_INTERRUPTED, debug=False)
        except click.UsageError as error:
            usage = f"Usage: {PROG} [OPTIONS] IMAGE DIR" if error.ctx is None or \
                error.ctx.command is self else error.ctx.get_usage()
            click.echo(usage, err=True)
            _fail(error.format_message(), error.exit_code, debug=False, hint=True)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code, debug=False)


@click.group(
    cls=_DefaultToUnpack,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Turn an OCI container image into a runtime bundle that runc and crun run.

    \b
      oci-unpack IMAGE DIR      (the same as: oci-unpack unpack IMAGE DIR)

    Run `oci-unpack unpack --help` for the options.
    """


class _Reporter:
    """The terminal side of one command: the progress bar, warnings and errors, each on
    a line of its own (a bar being drawn is ended first)."""

    def __init__(self, quiet: bool) -> None:
        from unpack.progress import NoProgress, StatusLines, TerminalProgress

        self.quiet = quiet
        self.progress: Any = (NoProgress() if quiet else TerminalProgress(sys.stderr)
                              if sys.stderr.isatty() else StatusLines(sys.stderr))

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.progress.close()
            click.echo(f"{PROG}: warning: {message}", err=True)


def _reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the tool's errors into one stderr line and an exit code (tracebacks with --debug);
    SIGINT and SIGTERM end the command (once: a second one does not cut the clean-up)."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool, quiet: bool = False, **kwargs: Any) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        reporter = _Reporter(quiet)
        try:
            command(*args, reporter=reporter, **kwargs)
        except UnpackError as error:
            reporter.progress.close()
            _fail(str(error), error.exit_code, debug)
        except Exception as error:  # a bug: report it as such
            reporter.progress.close()
            _fail(f"internal error: {type(error).__name__}: {error}", EXIT_INTERNAL, debug)

    return wrapper


_interrupted = False


def _interrupt(signum: int, frame: object) -> None:
    """The first SIGINT/SIGTERM stops the command; later ones are ignored."""
    global _interrupted
    if not _interrupted:
        _interrupted = True
        raise Interrupted("interrupted; the partial bundle was removed" if signum ==
                          signal.SIGINT else "terminated; the partial bundle was removed")


def _fail(message: str, code: int, debug: bool, hint: bool = False) -> NoReturn:
    if debug:
        import traceback

        traceback.print_exc()
    line = " ".join(message.split("\n"))
    click.echo(f"{PROG}: error: {line}", err=True)
    if hint:
        click.echo(HELP_HINT, err=True)
    sys.exit(code)


class _Boolean(click.ParamType):
    """true or false (also yes/no, on/off, 1/0), as skopeo's --tls-verify takes."""

    name = "BOOL"
    _WORDS: ClassVar[dict[str, bool]] = {"true": True, "yes": True, "on": True, "1": True,
                                         "false": False, "no": False, "off": False, "0": False}

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in self._WORDS:
            self.fail(f"{value!r} is not true or false", param, ctx)
        return self._WORDS[word]


def _command_words(value: str | None, option: str) -> tuple[str, ...] | None:
    """`--args`/`--entrypoint`: a JSON array, or words split like a shell line."""
    if value is None:
        return None
    import json
    import shlex

    if value.lstrip().startswith("["):
        try:
            words = json.loads(value)
        except ValueError as error:
            raise UsageError(f"{option}: invalid JSON array ({error})") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UsageError(f"{option}: expected a JSON array of strings")
        return tuple(words)
    try:
        return tuple(shlex.split(value))
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _checked_env(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--env` values must be KEY=VAL with a non-empty KEY."""
    for value in values:
        if not value.partition("=")[0] or "=" not in value:
            raise UsageError(f"--env {value!r}: expected KEY=VAL")
    return values


def _option_group(
    argument: str, make: str, options: list[Callable[[Any], Any]]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator adding `options`; the command receives them as one `argument=make(...)`,
    `make` being "module:Class" (imported when the command runs)."""
    # click names a parameter once its option decorates a function: ask it on a stand-in
    names = [option(lambda: None).__click_params__[0].name for option in options]
    module, _, name = make.partition(":")

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def grouped(*args: Any, **kwargs: Any) -> None:
            cls = getattr(importlib.import_module(module), name)
            kwargs[argument] = cls(**{name: kwargs.pop(name) for name in names})
            command(*args, **kwargs)

        for option in reversed(options):
            grouped = option(grouped)
        return grouped

    return decorate


#: How to reach a registry (and where to cache its blobs): `source: SourceOptions`.
_source_options = _option_group("source", "unpack.source.base:SourceOptions", [
    click.option("--creds", metavar="USER:PASS",
                 help="Registry credentials (default: from the auth files)."),
    click.option("--authfile", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Registry auth file (default: the first of $REGISTRY_AUTH_FILE, "
                      "$XDG_RUNTIME_DIR/containers/auth.json, "
                      "~/.config/containers/auth.json, $DOCKER_CONFIG/config.json, "
                      "~/.docker/config.json with an entry for the registry)."),
    click.option("--tls-verify", type=_Boolean(), default=True,
                 help="Verify registry TLS certificates (default: true); false also allows "
                      "plain HTTP."),
    click.option("--cert-dir", type=click.Path(file_okay=False), metavar="DIR",
                 help="CA certificates (*.crt) and client pairs (*.cert, *.key) "
                      "for the registry."),
    click.option("--cache", type=click.Path(file_okay=False), metavar="DIR",
                 help="Keep fetched blobs in this OCI layout and reuse them."),
    click.option("--pull", type=click.Choice(["missing", "always"]), default="missing",
                 show_default=True,
                 help="With --cache: use a cached tag as is (missing), or ask the "
                      "registry what the tag names now (always)."),
    click.option("--registries-conf", "registries_conf", type=click.Path(dir_okay=False),
                 metavar="FILE",
                 help="Registries configuration: short names, mirrors, blocked and insecure "
                      "registries (default: ~/.config/containers/registries.conf, else "
                      "/etc/containers/registries.conf, with their registries.conf.d)."),
    click.option("--max-parallel-downloads", "parallel_downloads", type=click.IntRange(1, 16),
                 default=3, show_default=True, metavar="N",
                 help="Layers fetched from a registry at once (1: one after the other)."),
])

#: Which signature policy to apply: `trust: TrustOptions`.
_trust_options = _option_group("trust", "unpack.trust.decide:TrustOptions", [
    click.option("--policy", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Signature policy (default: ~/.config/containers/policy.json, "
                      "else /etc/containers/policy.json)."),
    click.option("--insecure-policy", is_flag=True,
                 help="Do not apply any signature policy."),
    click.option("--registries.d", "registries_d", type=click.Path(file_okay=False),
                 metavar="DIR",
                 help="Where signatures are (default: ~/.config/containers/registries.d, "
                      "else /etc/containers/registries.d)."),
])


def _raise_open_file_limit() -> None:
    """Deep trees need a directory fd per level while being removed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@main.command("unpack", epilog=EXIT_CODES_HELP,
              short_help="Unpack IMAGE into the runtime bundle DIR (the default command).")
@click.argument("image")
@click.argument("dir", type=click.Path())
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Platform to pick from a multi-platform image (default: this machine's).")
@click.option("--no-config", is_flag=True, help="Only unpack the rootfs; write no config.json.")
@click.option("--tty", is_flag=True, help="Set process.terminal in config.json.")
@click.option("--hostname", help="Set the container hostname.")
@click.option("--readonly-rootfs", is_flag=True, help="Mount the rootfs read-only.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VAL",
              help="Set an environment variable, overriding the image (repeatable).")
@click.option("--entrypoint", metavar="CMD",
              help="Replace the image Entrypoint (shell-like words or a JSON array); "
                   "clears the image Cmd unless --args is given.")
@click.option("--args", "args_", metavar="ARGS",
              help="Replace the image Cmd (shell-like words or a JSON array).")
@click.option("--volumes", type=click.Choice(["tmpfs", "bind", "none"]), default="tmpfs",
              show_default=True,
              help="How image Volumes are mounted: tmpfs, bind (from DIR/volumes/), or none.")
@click.option("--rootless", is_flag=True,
              help="Unpack as an unprivileged user would (owners recorded in the "
                   "user.rootlesscontainers xattr, devices as placeholders) and write a "
                   "rootless config.json. Implied when not running as root.")
@click.option("--uid-map", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="Map container uids to host uids for file owners and config.json "
                   "(repeatable; needs --gid-map too).")
@click.option("--gid-map", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="Map container gids to host gids (repeatable; needs --uid-map too).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no warnings.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a machine-readable summary (digests, layers, sizes, times) on stdout.")
@_source_options
@_trust_options
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@_reports_errors
def unpack_command(
    image: str,
    dir: str,
    platform: str | None,
    no_config: bool,
    tty: bool,
    hostname: str | None,
    readonly_rootfs: bool,
    env: tuple[str, ...],
    entrypoint: str | None,
    args_: str | None,
    volumes: str,
    rootless: bool,
    uid_map: tuple[str, ...],
    gid_map: tuple[str, ...],
    as_json: bool,
    source: Any,
    trust: Any,
    reporter: _Reporter,
) -> None:
    """Unpack IMAGE into the runtime bundle DIR (DIR/config.json and DIR/rootfs).

    \b
    IMAGE is one of (skopeo's transport names):
      oci:PATH[:REF]                          an OCI image layout directory
      oci-archive:PATH[:REF]                  an OCI layout in a tar (.tar, .tar.gz)
      docker-archive:PATH[:NAME:TAG]          a docker save / docker-archive tarball
      docker://HOST[:PORT]/NAME[:TAG|@DIGEST] an image in a registry
      PATH[:REF]                              a layout directory, or an archive file
      NAME[:TAG|@DIGEST]                      a name (not a path) resolved through
                                              registries.conf (short names, mirrors)

    REF is a tag (the org.opencontainers.image.ref.name annotation) or a
    manifest digest (sha256:...). Without REF: the only image, else the one
    tagged 'latest'.

    DIR must not exist or be empty. The bundle is built beside it and moved
    into place only when complete: after any failure nothing is left at DIR.

    \b
    Examples:
      oci-unpack ./busybox-layout:latest ./bundle && runc run -b ./bundle demo
      oci-unpack --platform linux/arm64 ./multi:v1 ./bundle-arm64
      oci-unpack docker-archive:./saved.tar:busybox:latest ./bundle
      oci-unpack --cache ~/.cache/oci docker://registry.example:5000/app:1.2 ./bundle
    """
    from unpack.api import unpack_image
    from unpack.config import RuntimeOptions
    from unpack.idmap import IdMap
    from unpack.image.platform import Platform
    from unpack.verbs.unpack import UnpackOptions

    _raise_open_file_limit()
    runtime = RuntimeOptions(
        tty=tty,
        hostname=hostname,
        readonly_rootfs=readonly_rootfs,
        env=_checked_env(env),
        args=_command_words(args_, "--args"),
        entrypoint=_command_words(entrypoint, "--entrypoint"),
        volumes=volumes,
    )
    if bool(uid_map) != bool(gid_map):
        raise UsageError("--uid-map and --gid-map go together: give both")
    options = UnpackOptions(
        platform=None if platform is None else Platform.parse(platform),
        runtime=runtime,
        write_config=not no_config,
        source=source,
        trust=trust,
        rootless=rootless or os.geteuid() != 0,
        uid_map=IdMap.parse(uid_map, "uid"),
        gid_map=IdMap.parse(gid_map, "gid"),
    )
    report = unpack_image(image, dir, options, progress=reporter.progress, warn=reporter.warn)
    if as_json:
        import dataclasses
        import json

        click.echo(json.dumps(dataclasses.asdict(report), indent=2))


@main.command("inspect", short_help="Describe IMAGE without unpacking it.",
              epilog=EXIT_CODES_HELP.replace(
    "the bundle is complete at DIR", "the image was read and described"
).replace("  4    filesystem error at the destination (exists, permission, disk full)\n", "")
    .replace("; nothing is left at DIR", ""))
@click.argument("image")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Platform to describe in a multi-platform image (default: this machine's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_source_options
@_trust_options
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@_reports_errors
def inspect_command(
    image: str,
    platform: str | None,
    as_json: bool,
    source: Any,
    trust: Any,
    reporter: _Reporter,
) -> None:
    """Describe IMAGE without unpacking it: platforms, manifest, layers, config.

    IMAGE takes the same forms as for `oci-unpack unpack` (oci:, oci-archive:,
    docker-archive:, docker://, or a path). Only the index, manifest and
    config are read; no layer is downloaded.
    """
    from unpack.api import inspect_image
    from unpack.image.platform import Platform
    from unpack.verbs.inspect import report_json, report_table

    report = inspect_image(image, platform=None if platform is None else Platform.parse(platform),
                           source=source, trust=trust)
    click.echo(report_json(report) if as_json else report_table(report))
