"""Platforms: containerd-style normalisation and the choice among a multi-platform image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, run_cli

from fixtures.images import MULTIARCH_PLATFORMS, platform_string
from fixtures.layout import LayoutWriter, host_arch, host_platform
from fixtures.tarwriter import build_tar, reg
from unpack.errors import EXIT_IMAGE, EXIT_USAGE, ImageError, UsageError
from unpack.image.platform import Platform
from unpack.image.resolve import Image, resolve_image
from unpack.source.layout import Layout

OTHERS: list[dict[str, str]] = [
    {"os": "linux", "architecture": "s390x"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "linux", "architecture": "arm", "variant": "v6"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "ppc64le"},
    {"os": "windows", "architecture": host_arch()},
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "riscv64"},
]


def other_platforms() -> list[dict[str, str]]:
    """A set of platforms not equal to the host's (the host's is added last by callers)."""
    host = Platform.from_descriptor(host_platform())
    return [p for p in OTHERS if Platform.from_descriptor(p) != host]


def multi_layout(root: Path, platforms: list[dict[str, str]], *, nested: bool = False) -> None:
    """A layout tagged latest: an index of one image per platform, /platform naming it.

    `nested`: the index holds a second index holding the second half of the platforms.
    """
    out = LayoutWriter(root)
    manifests = []
    for plat in platforms:
        tar = build_tar([reg("platform", platform_string(plat).encode() + b"\n")])
        manifests.append(out.add_image([out.add_layer(tar)], {}, platform=plat))
    if nested:
        half = len(manifests) // 2
        inner = out.add_index(manifests[half:])
        top = out.add_index([*manifests[:half], inner])
    else:
        top = out.add_index(manifests)
    out.tag(top, "latest")
    out.write()


def resolve(root: Path, platform: str | None, ref: str | None = "latest") -> Image:
    with Layout(str(root)) as layout:
        return resolve_image(layout, ref, Platform.parse(platform) if platform else None)


def chosen(image: Image) -> dict[str, Any]:
    raw = image.config.raw
    return {k: raw[k] for k in ("os", "architecture", "variant") if k in raw}


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("LINUX/AMD64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm64/8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/arm/5", "linux/arm/v5"),
        ("linux/i386", "linux/386"),
        ("linux/i686", "linux/386"),
        ("linux/s390x", "linux/s390x"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse_normalises(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected
    assert Platform.parse(text) == Platform.parse(expected)


def test_arm64_with_and_without_v8_are_equal() -> None:
    assert Platform.parse("linux/arm64") == Platform.parse("linux/arm64/v8")
    assert Platform.of("linux", "arm64", "v8") == Platform("linux", "arm64", "")
    assert Platform.parse("linux/arm/v7") != Platform.parse("linux/arm/v6")


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "linux//v7",
                                  "linux/arm/v7/extra", "linux/amd64/"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        Platform.parse(text)
    assert excinfo.value.exit_code == EXIT_USAGE
    assert f"invalid platform {text!r}" in str(excinfo.value)
    assert "OS/ARCH[/VARIANT]" in str(excinfo.value)


def test_from_descriptor() -> None:
    assert Platform.from_descriptor({"os": "linux", "architecture": "arm64", "variant": "v8"}) \
        == Platform("linux", "arm64")
    assert Platform.from_descriptor({"os": "linux", "architecture": "arm"}) \
        == Platform("linux", "arm", "v7")
    assert Platform.from_descriptor({"architecture": "amd64"}) is None
    assert Platform.from_descriptor({"os": "linux", "architecture": 5}) is None
    assert Platform.from_descriptor({"os": "linux", "architecture": "amd64", "variant": 3}) \
        == Platform("linux", "amd64")


def test_host_platform() -> None:
    host = Platform.host()
    assert host == Platform.from_descriptor(host_platform())
    assert host.os == "linux"
    assert host.architecture == host_arch()


# -- choosing among platforms ----------------------------------------------------------------


def test_default_is_the_host_even_when_listed_last(tmp_path: Path) -> None:
    platforms = [*other_platforms(), host_platform()]
    multi_layout(tmp_path / "img", platforms)
    image = resolve(tmp_path / "img", None)
    assert image.platform == Platform.host()
    assert chosen(image)["architecture"] == host_arch()


def test_default_is_the_host_in_a_nested_index(tmp_path: Path) -> None:
    platforms = [*other_platforms(), host_platform()]
    multi_layout(tmp_path / "img", platforms, nested=True)
    assert resolve(tmp_path / "img", None).platform == Platform.host()


def test_explicit_platforms(tmp_path: Path) -> None:
    multi_layout(tmp_path / "img", [*other_platforms(), host_platform()], nested=True)
    for text, expected in [
        ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("linux/arm64/v8", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("linux/aarch64", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ("linux/arm", {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v6"}),
        ("linux/s390x", {"os": "linux", "architecture": "s390x"}),
    ]:
        if Platform.parse(text) == Platform.host():
            continue
        assert chosen(resolve(tmp_path / "img", text)) == expected, text


def test_arm64_index_entry_without_variant_matches_v8_request(tmp_path: Path) -> None:
    multi_layout(tmp_path / "img", [{"os": "linux", "architecture": "s390x"},
                                    {"os": "linux", "architecture": "arm64"}])
    image = resolve(tmp_path / "img", "linux/arm64/v8")
    assert chosen(image) == {"os": "linux", "architecture": "arm64"}


def test_no_match_lists_the_platforms_present(tmp_path: Path) -> None:
    multi_layout(tmp_path / "img", [{"os": "linux", "architecture": "s390x"},
                                    {"os": "linux", "architecture": "arm", "variant": "v7"},
                                    {"os": "linux", "architecture": "arm64", "variant": "v8"}])
    with pytest.raises(ImageError) as excinfo:
        resolve(tmp_path / "img", "linux/mips64le")
    message = str(excinfo.value)
    assert excinfo.value.exit_code == EXIT_IMAGE
    assert "no manifest for platform linux/mips64le" in message
    assert f"{tmp_path}/img:latest" in message
    assert "platforms present: linux/arm/v7, linux/arm64, linux/s390x" in message


def test_no_host_match_by_default_lists_the_platforms(tmp_path: Path) -> None:
    multi_layout(tmp_path / "img", other_platforms()[:2])
    with pytest.raises(ImageError) as excinfo:
        resolve(tmp_path / "img", None)
    assert f"no manifest for platform {Platform.host()}" in str(excinfo.value)
    assert "platforms present: " in str(excinfo.value)


def test_requested_platform_must_match_the_config(tmp_path: Path) -> None:
    """A lone manifest with no platform in index.json is still checked against its config."""
    out = LayoutWriter(tmp_path / "img")
    desc = out.add_image([out.add_layer(build_tar([reg("x")]))], {},
                         platform={"os": "linux", "architecture": "s390x"})
    del desc["platform"]
    out.tag(desc, "latest")
    out.write()
    assert resolve(tmp_path / "img", "linux/s390x").platform == Platform("linux", "s390x")
    with pytest.raises(ImageError) as excinfo:
        resolve(tmp_path / "img", "linux/riscv64")
    assert "is for linux/s390x, not the requested linux/riscv64" in str(excinfo.value)
    assert desc["digest"] in str(excinfo.value)


# -- through the command line ----------------------------------------------------------------


@needs_root
def test_cli_multiarch_fixture(images: Path, tmp_path: Path) -> None:
    """The fixture lists s390x first; the default is the host, --platform picks others."""
    assert Platform.from_descriptor(MULTIARCH_PLATFORMS[0]) != Platform.host()
    cases = {
        None: None,
        "linux/arm64": "linux/arm64/v8",
        "linux/arm64/v8": "linux/arm64/v8",
        "linux/arm/v7": "linux/arm/v7",
    }
    host = [p for p in MULTIARCH_PLATFORMS if Platform.from_descriptor(p) == Platform.host()]
    for number, (option, expected) in enumerate(cases.items()):
        if option is None:
            if not host:
                continue
            expected = platform_string(host[0])
        bundle = tmp_path / f"bundle{number}"
        args = ["--platform", option] if option else []
        result = run_cli(*args, "--json", images / "multiarch", bundle)
        assert result.returncode == 0, result.stderr
        assert (bundle / "rootfs" / "platform").read_text() == expected + "\n"
        report = json.loads(result.stdout)
        assert report["platform"] == str(Platform.parse(expected))


def test_cli_no_match(images: Path, tmp_path: Path) -> None:
    result = run_cli("--platform", "linux/mips64le", images / "multiarch", tmp_path / "b")
    assert result.returncode == 3
    assert "platforms present: linux/amd64, linux/arm/v7, linux/arm64, linux/s390x" \
        in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("value", ["linux", "linux/", "a/b/c/d", "linux/arm/v7/x"])
def test_cli_bad_platform_is_a_usage_error(images: Path, tmp_path: Path, value: str) -> None:
    result = run_cli("--platform", value, images / "multiarch", tmp_path / "b")
    assert result.returncode == 2
    assert result.stderr == f"oci-unpack: error: invalid platform {value!r}: " \
        "expected OS/ARCH[/VARIANT]\n"
    assert not (tmp_path / "b").exists()


def test_cli_empty_platform_is_a_usage_error(images: Path, tmp_path: Path) -> None:
    result = run_cli("--platform", "", images / "multiarch", tmp_path / "b")
    assert result.returncode == 2
    assert "invalid platform ''" in result.stderr
