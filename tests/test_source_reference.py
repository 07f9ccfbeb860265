"""IMAGE with skopeo's transport names: parsing, auto-detection, and the errors that list forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from unpack.errors import EXIT_USAGE, UsageError
from unpack.source import Source, open_source, parse_image_reference
from unpack.source.layout import Layout
from unpack.source.registry import RegistryReference, RegistrySource
from unpack.verify import Digest

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def paths(tmp_path: Path) -> Path:
    (tmp_path / "layout").mkdir()
    (tmp_path / "my:dir").mkdir()
    with open(tmp_path / "image.tar", "wb") as file:
        file.write(b"\0" * 1024)  # not sniffed as a tar: only used where the path must exist
    return tmp_path


# -- local transports --------------------------------------------------------------------------


def test_oci_transport_with_and_without_ref(paths: Path) -> None:
    ref = parse_image_reference(f"oci:{paths}/layout")
    assert (ref.transport, ref.location, ref.ref) == ("oci", f"{paths}/layout", None)
    ref = parse_image_reference(f"oci:{paths}/layout:v1.2")
    assert (ref.location, ref.ref) == (f"{paths}/layout", "v1.2")
    assert str(ref) == f"oci:{paths}/layout:v1.2"
    ref = parse_image_reference(f"oci:{paths}/layout:{DIGEST}")
    assert ref.ref == DIGEST


def test_oci_transport_path_with_colons(paths: Path) -> None:
    assert parse_image_reference(f"oci:{paths}/my:dir").location == f"{paths}/my:dir"
    ref = parse_image_reference(f"oci:{paths}/my:dir:latest")
    assert (ref.location, ref.ref) == (f"{paths}/my:dir", "latest")


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_archive_transports(paths: Path, transport: str) -> None:
    ref = parse_image_reference(f"{transport}:{paths}/image.tar")
    assert (ref.transport, ref.location, ref.ref) == (transport, f"{paths}/image.tar", None)
    ref = parse_image_reference(f"{transport}:{paths}/image.tar:docker.io/library/x:1")
    assert (ref.location, ref.ref) == (f"{paths}/image.tar", "docker.io/library/x:1")


def test_docker_archive_index_form(paths: Path) -> None:
    assert parse_image_reference(f"docker-archive:{paths}/image.tar:@1").ref == "@1"


def test_bare_directory_is_a_layout(paths: Path) -> None:
    ref = parse_image_reference(f"{paths}/layout:v1")
    assert (ref.transport, ref.location, ref.ref) == ("oci", f"{paths}/layout", "v1")


def test_bare_file_is_sniffed(tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("x"))
    ref = parse_image_reference(f"{tmp_path}/a.tar:name:tag")
    assert (ref.transport, ref.location, ref.ref) == ("archive", f"{tmp_path}/a.tar", "name:tag")
    assert str(ref) == f"{tmp_path}/a.tar:name:tag"


def test_bare_file_that_is_no_archive(paths: Path) -> None:
    (paths / "notes.txt").write_text("hello, not a tar\n" * 40)
    with pytest.raises(UsageError, match="neither an OCI image layout directory nor a tar"):
        open_source(f"{paths}/notes.txt")


def test_directory_that_is_no_layout(paths: Path) -> None:
    with pytest.raises(UsageError, match="not an OCI image layout"):
        open_source(f"{paths}/layout")


@pytest.mark.parametrize(("text", "message"), [
    ("oci:{p}/missing", "{p}/missing: no such file or directory"),
    ("oci:{p}/image.tar", "{p}/image.tar: not an OCI image layout directory, which oci: names"),
    ("oci-archive:{p}/layout", "{p}/layout: not an archive file, which oci-archive: names"),
    ("docker-archive:{p}/nope", "{p}/nope: no such file or directory"),
    ("{p}/missing:latest", "{p}/missing:latest: no such file or directory"),
    ("./busybox", "./busybox: no such file or directory"),
    ("busybox/", "busybox/: no such file or directory"),
    ("~/busybox", "~/busybox: no such file or directory"),
])
def test_missing_or_wrong_kind_is_one_short_sentence(paths: Path, text: str,
                                                     message: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_image_reference(text.format(p=paths))
    assert excinfo.value.exit_code == EXIT_USAGE
    assert str(excinfo.value) == message.format(p=paths)


@pytest.mark.parametrize("text", ["busybox", "library/busybox:1.36", "team/app@sha256:"
                                  + "a" * 64, "quay.io/team/app:1", "localhost:5000/x"])
def test_a_name_that_is_no_path_is_resolved_as_a_registry_name(text: str) -> None:
    reference = parse_image_reference(text)
    assert (reference.transport, reference.short_name, reference.registry) == (
        "docker", text, None)


def test_empty_image_lists_the_forms() -> None:
    with pytest.raises(UsageError, match="IMAGE is empty") as excinfo:
        parse_image_reference("")
    assert "docker://HOST" in str(excinfo.value)


def test_transport_prefix_wins_over_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`oci:x` is the transport even if a directory named `oci:x` exists; `./oci:x` is the path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "oci:x").mkdir()
    (tmp_path / "x").mkdir()
    assert parse_image_reference("oci:x").location == "x"
    assert parse_image_reference("./oci:x").location == "./oci:x"


# -- docker:// ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("docker://127.0.0.1:5000/app:1.0", "127.0.0.1:5000", "app", "1.0", None),
    ("docker://localhost/team/app", "localhost", "team/app", "latest", None),
    ("docker://registry.example/a/b/c:v2", "registry.example", "a/b/c", "v2", None),
    (f"docker://ghcr.io/o/app@{DIGEST}", "ghcr.io", "o/app", None, DIGEST),
    (f"docker://ghcr.io/o/app:v1@{DIGEST}", "ghcr.io", "o/app", "v1", DIGEST),
    ("docker://busybox", "docker.io", "library/busybox", "latest", None),
    ("docker://docker.io/busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("docker://index.docker.io/user/app", "docker.io", "user/app", "latest", None),
    ("docker://user/app:x", "docker.io", "user/app", "x", None),
    ("docker://[::1]:5000/app", "[::1]:5000", "app", "latest", None),
])
def test_registry_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_image_reference(text)
    assert ref.transport == "docker"
    assert ref.registry == RegistryReference(
        registry, repository, tag, Digest.parse(digest) if digest else None
    )
    assert ref.ref == (digest or tag)


def test_docker_hub_api_host() -> None:
    ref = parse_image_reference("docker://busybox").registry
    assert ref is not None and ref.api_host == "registry-1.docker.io"
    assert str(ref) == "docker://docker.io/library/busybox:latest"


@pytest.mark.parametrize("text", [
    "docker:busybox", "docker://Upper/Case", "docker://host:5000/app:bad tag",
    "docker://host:5000/app@sha256:abc", "docker://host:5000/", "docker://ho$t:1/app",
    "docker://host:5000/app:" + "t" * 200,
])
def test_bad_registry_references(text: str) -> None:
    with pytest.raises(UsageError):
        parse_image_reference(text)


# -- open_source and the CLI -------------------------------------------------------------------


def test_open_source_kinds(images: Path) -> None:
    source, ref, parsed = open_source(f"oci:{images}/demo:v1")
    with source:
        assert isinstance(source, Layout) and isinstance(source, Source)
        assert ref == "v1" and parsed.transport == "oci"
    source, ref, _ = open_source("docker://127.0.0.1:9/x:y")  # nothing is sent until asked
    with source:
        assert isinstance(source, RegistrySource) and isinstance(source, Source)
        assert ref == "y" and source.client.requests_sent == 0


def test_cli_bad_reference_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("docker-archive:/nonexistent/x.tar", tmp_path / "bundle")
    assert result.returncode == 2
    assert result.stderr.startswith("oci-unpack: error: ")
    assert result.stderr == "oci-unpack: error: /nonexistent/x.tar: no such file or directory\n"
    assert not (tmp_path / "bundle").exists()


def test_cli_inspect_bad_reference(tmp_path: Path) -> None:
    result = run_cli("inspect", "docker://host/UPPER")
    assert result.returncode == 2 and "invalid" in result.stderr
