"""The command line: help, version, error lines and exit codes, --json, --quiet, progress."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import REPO, needs_root, run_cli

from fixtures.layout import LayoutWriter, host_arch
from fixtures.tarwriter import Entry, build_tar, dirent, reg
from unpack import __version__

ERROR = "oci-unpack: error: "


def one_error_line(result: subprocess.CompletedProcess, code: int) -> str:
    """Check the run failed with `code` and exactly one `oci-unpack: error:` line; return it."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def temp_dirs_of(parent: Path) -> list[str]:
    return [n for n in os.listdir(parent) if ".oci-unpack-" in n]


def no_bundle_left(dest: Path) -> None:
    assert not os.path.lexists(dest)
    assert temp_dirs_of(dest.parent) == []


# -- help and version ------------------------------------------------------------------------


def test_unpack_help() -> None:
    result = run_cli("unpack", "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "IMAGE" in text and "DIR" in text
    assert "Exit codes:" in text
    for code in ("0", "2", "3", "4", "70", "130"):
        assert re.search(rf"^ +{code} +\S", text, re.MULTILINE), code
    for option in ("--platform", "--json", "--quiet", "--debug", "--no-config"):
        assert option in text


def test_top_level_help_mentions_image_and_dir() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "IMAGE DIR" in result.stdout
    assert "unpack" in result.stdout


def test_top_level_help_mentions_exit_codes() -> None:
    result = run_cli("--help")
    assert "Exit codes:" in result.stdout
    assert "130" in result.stdout


def test_short_help_option() -> None:
    for args in (["-h"], ["unpack", "-h"]):
        result = run_cli(*args)
        assert result.returncode == 0
        assert "IMAGE" in result.stdout and "DIR" in result.stdout
    assert "Exit codes:" in run_cli("unpack", "-h").stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"oci-unpack, version {__version__}\n"


@needs_root
def test_python_dash_m_and_the_installed_script_agree(images: Path, tmp_path: Path) -> None:
    result = run_cli(images / "multi-member-gzip", tmp_path / "via-m")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "via-m" / "config.json").is_file()
    script = shutil.which("oci-unpack")
    if script is None:
        pytest.skip("the oci-unpack script is not installed on PATH")
    result = subprocess.run([script, images / "multi-member-gzip", tmp_path / "via-script"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "via-script" / "config.json").read_bytes() \
        == (tmp_path / "via-m" / "config.json").read_bytes()


@needs_root
def test_explicit_unpack_subcommand(images: Path, tmp_path: Path) -> None:
    result = run_cli("unpack", images / "sha512", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bundle" / "rootfs" / "hello.txt").read_bytes() == b"hello again\n"


# -- errors: one line, exit codes ------------------------------------------------------------


@needs_root
def test_image_error_is_one_line_exit_3(images: Path, tmp_path: Path) -> None:
    line = one_error_line(run_cli(images / "corrupt-diff-id", tmp_path / "b"), 3)
    assert "diff_id" in line
    no_bundle_left(tmp_path / "b")


@needs_root
def test_debug_shows_a_traceback(images: Path, tmp_path: Path) -> None:
    result = run_cli("--debug", images / "corrupt-diff-id", tmp_path / "b")
    assert result.returncode == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "VerificationError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(ERROR)
    no_bundle_left(tmp_path / "b")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--platform", "linux"], "invalid platform 'linux'"),
        (["--args", "[1, 2]"], "--args: expected a JSON array of strings"),
        (["--args", "[oops"], "--args: invalid JSON array"),
        (["--entrypoint", "sh -c 'unterminated"], "--entrypoint: "),
    ],
)
def test_usage_errors_of_the_tool_are_one_line_exit_2(
    images: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    line = one_error_line(run_cli(*args, images / "sha512", tmp_path / "b"), 2)
    assert needle in line
    no_bundle_left(tmp_path / "b")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["unpack"],
        ["IMAGE-ONLY"],
        ["--bogus-option", "a", "b"],
        ["a", "b", "extra"],
        ["--volumes", "nfs", "a", "b"],
    ],
)
def test_command_line_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [[], ["IMAGE-ONLY"], ["--bogus-option", "a", "b"]])
def test_usage_errors_give_the_usage_one_error_line_and_a_pointer_to_help(
    args: list[str]
) -> None:
    """As click prints them (and no whole help text folded into one line)."""
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    usage, error, hint = result.stderr.splitlines()
    assert usage.startswith("Usage: oci-unpack ") and usage.endswith("IMAGE DIR")
    assert error.startswith(ERROR) and len(error) < 120
    assert hint == "Try 'oci-unpack --help' for help."


def test_tls_verify_takes_true_or_false() -> None:
    result = run_cli("--tls-verify=maybe", "a", "b")
    assert result.returncode == 2
    assert "'maybe' is not true or false" in result.stderr
    assert "Recognized values: ," not in result.stderr  # no empty choice
    assert run_cli("--tls-verify", "no", "/nonexistent", "b").returncode == 2  # parsed


def test_empty_dir_argument_is_a_usage_error(images: Path, tmp_path: Path) -> None:
    result = run_cli(images / "demo", "", cwd=tmp_path)
    assert result.returncode == 2 and "DIR is empty" in result.stderr
    assert os.listdir(tmp_path) == []  # not unpacked into the working directory


def test_dir_not_empty_exit_4(images: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    line = one_error_line(run_cli(images / "sha512", dest), 4)
    assert f"{dest}: exists and is not empty" in line
    assert os.listdir(dest) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "mine"
    assert temp_dirs_of(tmp_path) == []


def test_dir_is_a_file_exit_4(images: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.write_text("a file")
    line = one_error_line(run_cli(images / "sha512", dest), 4)
    assert f"{dest}: exists and is not a directory" in line
    assert dest.read_text() == "a file"


def test_dir_is_a_symlink_to_an_empty_dir_exit_4(images: Path, tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    dest = tmp_path / "bundle"
    dest.symlink_to(tmp_path / "target")
    line = one_error_line(run_cli(images / "sha512", dest), 4)
    assert f"{dest}: exists and is not a directory" in line
    assert dest.is_symlink() and os.listdir(tmp_path / "target") == []


def test_parent_missing_exit_4(images: Path, tmp_path: Path) -> None:
    dest = tmp_path / "no" / "such" / "bundle"
    line = one_error_line(run_cli(images / "sha512", dest), 4)
    assert f"parent directory {tmp_path}/no/such does not exist" in line
    assert not (tmp_path / "no").exists()


def test_bad_image_and_bad_dir_together_destroy_nothing(tmp_path: Path) -> None:
    """A bad image and a bad DIR: whichever is reported, DIR is untouched."""
    (tmp_path / "img").mkdir()
    dest = tmp_path / "bundle"
    dest.write_text("x")
    result = run_cli(tmp_path / "img", dest)
    one_error_line(result, result.returncode)
    assert result.returncode in (2, 4)  # an empty directory is no image (usage); a bad DIR is 4
    assert dest.read_text() == "x"
    assert temp_dirs_of(tmp_path) == []


# -- --json, --quiet, progress ---------------------------------------------------------------


@needs_root
def test_json_report(images: Path, tmp_path: Path) -> None:
    root = images / "demo"
    result = run_cli("--json", root, tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    entry = json.loads((root / "index.json").read_bytes())["manifests"][0]
    algorithm, hexdigest = entry["digest"].split(":")
    manifest = json.loads((root / "blobs" / algorithm / hexdigest).read_bytes())
    assert report["manifest"] == entry["digest"]
    assert report["config"] == manifest["config"]["digest"]
    assert report["platform"] == f"linux/{host_arch()}"
    assert report["bundle"] == str(tmp_path / "bundle")
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] >= 0
    assert len(report["layers"]) == len(manifest["layers"]) == 4
    for layer, desc in zip(report["layers"], manifest["layers"], strict=True):
        assert layer["digest"] == desc["digest"]
        assert layer.get("mediaType", layer.get("media_type")) == desc["mediaType"]
        assert layer["size"] == desc["size"]
        assert layer["uncompressed_size"] >= 1024 and layer["uncompressed_size"] % 512 == 0
        assert layer["entries"] > 0
        assert isinstance(layer["seconds"], (int, float)) and layer["seconds"] >= 0
    uncompressed = [la for la, d in zip(report["layers"], manifest["layers"], strict=True)
                    if d["mediaType"].endswith(".tar")]
    assert all(la["uncompressed_size"] == la["size"] for la in uncompressed)


@needs_root
def test_json_report_counts_entries(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    tar = build_tar([dirent("a"), reg("a/1", b"1"), reg("a/2", b"22"), reg("b", b"333")])
    out.tag(out.add_image([out.add_layer(tar, "zstd")], {}), "latest")
    out.write()
    result = run_cli("--json", tmp_path / "img", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    (layer,) = json.loads(result.stdout)["layers"]
    assert layer["entries"] == 4
    assert layer["uncompressed_size"] == len(tar)


def _warning_image(root: Path) -> None:
    """A symlink carrying a user.* xattr: applied, with a warning that it was skipped."""
    out = LayoutWriter(root)
    link = Entry("link", "symlink", linkname="target", xattrs={"user.x": b"1"})
    out.tag(out.add_image([out.add_layer(build_tar([reg("target", b"t"), link]))], {}),
            "latest")
    out.write()


@needs_root
def test_warnings_go_to_stderr(tmp_path: Path) -> None:
    _warning_image(tmp_path / "img")
    result = run_cli(tmp_path / "img", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("oci-unpack: warning: ")
    assert "'link'" in result.stderr
    assert os.readlink(tmp_path / "bundle" / "rootfs" / "link") == "target"


@needs_root
def test_quiet_prints_nothing_on_stderr(tmp_path: Path) -> None:
    _warning_image(tmp_path / "img")
    result = run_cli("--quiet", tmp_path / "img", tmp_path / "bundle")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""
    assert (tmp_path / "bundle" / "config.json").is_file()


@needs_root
def test_quiet_still_reports_errors(images: Path, tmp_path: Path) -> None:
    one_error_line(run_cli("-q", images / "corrupt-layer-size", tmp_path / "b"), 3)


@needs_root
def test_no_progress_bar_when_stderr_is_not_a_tty(images: Path, tmp_path: Path) -> None:
    result = run_cli(images / "demo", tmp_path / "bundle")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""


def run_on_terminal(args: list[str | Path], columns: int, rows: int = 24) -> tuple[int, str]:
    """Run oci-unpack with stderr on a pseudo-terminal of this size: (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unpack", *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, cwd=REPO,
        )
        os.close(slave)
        slave = -1
        output = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
        proc.wait()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return proc.returncode, output.decode()


def screen_lines(output: str, columns: int) -> list[str]:
    """The lines a terminal shows: each progress line drawn (between carriage returns) must
    fit in the width, else the terminal would have wrapped it onto a new line."""
    lines = []
    for line in output.replace("\r\n", "\n").split("\n"):
        for segment in line.split("\r"):
            if segment.startswith("layer "):
                assert len(segment) < columns, f"{segment!r} wraps at {columns} columns"
        shown = ""
        for segment in line.split("\r"):  # each redraw overwrites from column 0
            shown = segment + shown[len(segment):]
        lines.append(shown.rstrip())
    return [line for line in lines if line]


@needs_root
@pytest.mark.parametrize("columns", [80, 50, 30])
def test_progress_fits_the_terminal_one_line_per_layer(
    images: Path, tmp_path: Path, columns: int
) -> None:
    code, output = run_on_terminal([images / "demo", tmp_path / "bundle"], columns)
    assert code == 0, output
    lines = screen_lines(output, columns)
    assert len(lines) == 4, lines  # one per layer, nothing scrolled
    for number, line in enumerate(lines, 1):
        assert line.startswith(f"layer {number}/4 ") and "100%" in line
    assert ("[" + "#" * 10) in output if columns >= 80 else "[" not in output


@needs_root
def test_an_error_is_printed_below_the_bar(images: Path, tmp_path: Path) -> None:
    code, output = run_on_terminal([images / "corrupt-layer-size", tmp_path / "b"], 80)
    assert code == 3, output
    lines = screen_lines(output, 80)
    assert lines[-1].startswith(ERROR)  # on its own line, not after the bar's numbers
    assert lines[-2].startswith("layer ")


def _complete(words: str, shell: str = "bash") -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "_OCI_UNPACK_COMPLETE":
                   f"{shell}_complete", "COMP_WORDS": words,
                   "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    return subprocess.run([sys.executable, "-m", "unpack"], capture_output=True, text=True,
                          env=environment, cwd=REPO)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts(shell: str) -> None:
    """The README's `_OCI_UNPACK_COMPLETE={shell}_source oci-unpack` gives a script."""
    result = subprocess.run([sys.executable, "-m", "unpack"], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                           "_OCI_UNPACK_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0 and "_OCI_UNPACK_COMPLETE" in result.stdout, result.stderr


def test_shell_completion_of_commands_options_and_choices() -> None:
    assert _complete("oci-unpack in").stdout.split() == ["plain,inspect"]
    assert "plain,--platform" in _complete("oci-unpack unpack --pla").stdout.split()
    assert _complete("oci-unpack unpack --volumes ").stdout.split() == [
        "plain,tmpfs", "plain,bind", "plain,none"]


@needs_root
def test_cache_with_a_local_image_warns_that_it_does_nothing(images: Path,
                                                              tmp_path: Path) -> None:
    result = run_cli("--cache", tmp_path / "cache", images / "sha512", tmp_path / "b")
    assert result.returncode == 0, result.stderr
    assert "warning: --cache has no effect on a local image" in result.stderr
