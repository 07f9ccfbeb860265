"""The IMAGE argument: `LAYOUT[:REF]` parsing, and which manifest a REF (or none) selects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import needs_root, run_cli

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, reg
from unpack.errors import EXIT_IMAGE, EXIT_USAGE, ImageError, UsageError
from unpack.image.resolve import Image, resolve_image
from unpack.source.layout import Layout
from unpack.source.reference import ImageReference, parse_image_reference
from unpack.verify import Digest

REF_NAME = "org.opencontainers.image.ref.name"


def make_layout(root: Path, tags: list[str | None]) -> list[str]:
    """One single-layer image per entry of `tags` (None: listed untagged); /name says which.

    Returns the manifest digests in the same order.
    """
    out = LayoutWriter(root)
    digests = []
    for number, tag in enumerate(tags):
        tar = build_tar([reg("name", f"image {number}\n".encode())])
        desc = out.add_image([out.add_layer(tar)], {"config": {"Cmd": [f"/image{number}"]}})
        if tag is None:
            out.manifests.append(desc)
        else:
            out.tag(desc, tag)
        digests.append(desc["digest"])
    out.write()
    return digests


def resolve(root: Path, ref: str | None) -> Image:
    with Layout(str(root)) as layout:
        return resolve_image(layout, ref, None)


def resolve_error(root: Path, ref: str | None) -> ImageError:
    with pytest.raises(ImageError) as excinfo:
        resolve(root, ref)
    assert excinfo.value.exit_code == EXIT_IMAGE
    return excinfo.value


# -- parse_image_reference: PATH[:REF] without a transport ------------------------------------


def oci(path: object, **which: object) -> ImageReference:
    return ImageReference("oci", str(path), **which)  # type: ignore[arg-type]


def test_layout_alone(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    assert parse_image_reference(str(tmp_path / "img")) == oci(tmp_path / "img")


def test_layout_and_tag(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    ref = parse_image_reference(f"{tmp_path}/img:v1.2-rc_3")
    assert ref == oci(f"{tmp_path}/img", tag="v1.2-rc_3")
    assert str(ref) == f"oci:{tmp_path}/img:v1.2-rc_3"


def test_layout_and_digest_or_index(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    digest = "sha256:" + "ab" * 32
    assert parse_image_reference(f"{tmp_path}/img:{digest}") == oci(
        f"{tmp_path}/img", digest=Digest.parse(digest))
    assert parse_image_reference(f"{tmp_path}/img:@2") == oci(f"{tmp_path}/img", index=2)
    with pytest.raises(UsageError, match="invalid digest"):
        parse_image_reference(f"{tmp_path}/img:sha256:abc")


@pytest.mark.parametrize("ref", ["docker.io/library/x:1", "a/b/c", "x:y:z", "host:5000/x@y"])
def test_refs_with_colons_and_slashes(tmp_path: Path, ref: str) -> None:
    (tmp_path / "img").mkdir()
    assert parse_image_reference(f"{tmp_path}/img:{ref}") == oci(f"{tmp_path}/img", tag=ref)


def test_layout_path_with_colon(tmp_path: Path) -> None:
    layout = tmp_path / "my:image:dir"
    layout.mkdir()
    assert parse_image_reference(str(layout)) == oci(layout)
    assert parse_image_reference(f"{layout}:latest") == oci(layout, tag="latest")


def test_whole_string_wins_when_it_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a:b").mkdir()
    assert parse_image_reference(f"{tmp_path}/a:b") == oci(f"{tmp_path}/a:b")
    assert parse_image_reference(f"{tmp_path}/a:c") == oci(f"{tmp_path}/a", tag="c")


def test_relative_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "img").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_image_reference("img:latest") == oci("img", tag="latest")
    assert parse_image_reference("./img") == oci("./img")


@pytest.mark.parametrize("suffix", ["nope", "nope:latest", "nope/deeper:v1"])
def test_missing_path_is_a_short_usage_error(tmp_path: Path, suffix: str) -> None:
    text = f"{tmp_path}/{suffix}"
    with pytest.raises(UsageError) as excinfo:
        parse_image_reference(text)
    assert excinfo.value.exit_code == EXIT_USAGE
    assert str(excinfo.value) == f"{text}: no such file or directory"


def test_a_bare_name_is_a_registry_name_a_path_like_one_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`busybox` (no such path) is a short name for registries.conf to resolve; `./busybox`,
    `busybox/` and `/busybox` were obviously meant as paths: today's path error."""
    monkeypatch.chdir(tmp_path)
    assert parse_image_reference("busybox").short_name == "busybox"
    for path in ("./busybox", "busybox/", "/busybox"):
        with pytest.raises(UsageError) as excinfo:
            parse_image_reference(path)
        assert str(excinfo.value) == f"{path}: no such file or directory"


@pytest.mark.parametrize("ref", ["-flag", "bad ref", "ref\nx"])
def test_malformed_ref_is_a_usage_error(tmp_path: Path, ref: str) -> None:
    (tmp_path / "img").mkdir()
    with pytest.raises(UsageError, match="invalid image reference"):
        parse_image_reference(f"{tmp_path}/img:{ref}")


def test_empty_image_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="IMAGE is empty"):
        parse_image_reference("")


def test_a_file_is_an_archive_to_be(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert parse_image_reference(f"{tmp_path}/file:latest") == ImageReference(
        "archive", f"{tmp_path}/file", tag="latest")


# -- which manifest a REF selects ------------------------------------------------------------


def test_no_ref_picks_the_only_manifest_even_untagged(tmp_path: Path) -> None:
    (digest,) = make_layout(tmp_path / "untagged", [None])
    assert str(resolve(tmp_path / "untagged", None).manifest.digest) == digest
    (digest,) = make_layout(tmp_path / "other", ["v2"])
    assert str(resolve(tmp_path / "other", None).manifest.digest) == digest


def test_no_ref_picks_latest_among_several(tmp_path: Path) -> None:
    digests = make_layout(tmp_path / "img", ["v1", "latest", None])
    image = resolve(tmp_path / "img", None)
    assert str(image.manifest.digest) == digests[1]
    assert image.config.cmd == ("/image1",)


def test_no_ref_without_latest_lists_the_refs(tmp_path: Path) -> None:
    digests = make_layout(tmp_path / "img", ["v2", "v1", None])
    error = resolve_error(tmp_path / "img", None)
    message = str(error)
    assert "holds 3 manifests and none is tagged 'latest'" in message
    assert "v1, v2" in message and digests[2] in message


def test_tag_selects_its_manifest(tmp_path: Path) -> None:
    digests = make_layout(tmp_path / "img", ["latest", "v1", "docker.io/library/x:1"])
    assert str(resolve(tmp_path / "img", "v1").manifest.digest) == digests[1]
    assert str(resolve(tmp_path / "img", "docker.io/library/x:1").manifest.digest) == digests[2]


def test_unknown_tag_lists_the_refs(tmp_path: Path) -> None:
    make_layout(tmp_path / "img", ["latest", "v1", "docker.io/library/x:1"])
    message = str(resolve_error(tmp_path / "img", "v9"))
    assert "no image tagged 'v9'" in message
    assert "refs present: docker.io/library/x:1, latest, v1" in message


def test_unknown_tag_in_an_empty_layout(tmp_path: Path) -> None:
    make_layout(tmp_path / "img", [])
    message = str(resolve_error(tmp_path / "img", "latest"))
    assert "no image tagged 'latest'" in message and "(none)" in message


def test_digest_selects_a_manifest(tmp_path: Path) -> None:
    digests = make_layout(tmp_path / "img", ["latest", "v1", None])
    for digest in digests:
        assert str(resolve(tmp_path / "img", digest).manifest.digest) == digest


def test_unknown_digest_is_named(tmp_path: Path) -> None:
    make_layout(tmp_path / "img", ["latest"])
    digest = "sha256:" + "0" * 64
    message = str(resolve_error(tmp_path / "img", digest))
    assert f"no manifest {digest}" in message and "index.json" in message


def test_malformed_digest_ref(tmp_path: Path) -> None:
    make_layout(tmp_path / "img", ["latest"])
    message = str(resolve_error(tmp_path / "img", "sha256:abc"))
    assert "invalid digest 'sha256:abc'" in message


def test_same_tag_twice_is_resolved_by_platform(tmp_path: Path) -> None:
    """Two top-level entries tagged alike (other platform first): the host's is chosen."""
    out = LayoutWriter(tmp_path / "img")
    tar = build_tar([reg("x")])
    other = out.add_image([out.add_layer(tar)], {}, platform={"os": "linux",
                                                             "architecture": "riscv64"})
    host = out.add_image([out.add_layer(tar)], {"config": {"Cmd": ["/host"]}})
    out.tag(other, "latest")
    out.tag(host, "latest")
    out.write()
    assert str(resolve(tmp_path / "img", "latest").manifest.digest) == host["digest"]
    assert str(resolve(tmp_path / "img", None).manifest.digest) == host["digest"]


# -- through the command line ----------------------------------------------------------------


@needs_root
def test_cli_refs(tmp_path: Path) -> None:
    layout = tmp_path / "lay:out"
    digests = make_layout(layout, ["latest", "docker.io/library/x:1", None])
    cases = {
        str(layout): "image 0\n",
        f"{layout}:latest": "image 0\n",
        f"{layout}:docker.io/library/x:1": "image 1\n",
        f"{layout}:{digests[2]}": "image 2\n",
    }
    for number, (image, expected) in enumerate(cases.items()):
        bundle = tmp_path / f"bundle{number}"
        result = run_cli(image, bundle)
        assert result.returncode == 0, (image, result.stderr)
        assert (bundle / "rootfs" / "name").read_text() == expected
        config = json.loads((bundle / "config.json").read_text())
        assert config["process"]["args"] == [f"/image{expected.split()[1]}"]


def test_cli_unknown_tag(tmp_path: Path) -> None:
    make_layout(tmp_path / "img", ["latest", "v1"])
    result = run_cli(f"{tmp_path}/img:nope", tmp_path / "bundle")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "no image tagged 'nope'" in result.stderr and "latest, v1" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_cli_missing_layout(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "nope:latest", tmp_path / "bundle")
    assert result.returncode == 2
    assert result.stderr.startswith("oci-unpack: error: ")
    assert f"{tmp_path}/nope:latest" in result.stderr
    assert not os.path.exists(tmp_path / "bundle")
