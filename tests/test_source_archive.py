"""oci-archive and docker-archive sources, read in place (plain, gzip, zstd), and `inspect`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from conftest import needs_tool, run_cli
from registry import BIG_SIZE, build_source_image, tree

from unpack.errors import ImageError
from unpack.image.resolve import resolve_image
from unpack.source import open_source
from unpack.source import seekable as seekable_module
from unpack.source.archive import DockerArchive, OciArchive, normalise_tag
from unpack.source.tarindex import TarIndex

needs_skopeo = needs_tool("skopeo")


# -- the image, its reference bundle, and archives made by skopeo ------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archives")
    build_source_image(root / "layout")
    run_cli(root / "layout", root / "expected", check=True)
    return root


def expected_tree(work: Path) -> dict:
    return tree(work / "expected")


def layer_tars(layout: Path) -> list[bytes]:
    """The uncompressed layer tars of the test image, in order."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / manifest_digest).read_bytes())
    tars = []
    for layer in manifest["layers"]:
        data = (layout / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
        tars.append(gzip.decompress(data) if layer["mediaType"].endswith("gzip") else data)
    return tars


def config_bytes(layout: Path) -> bytes:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes()
    )
    return (layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes()


def skopeo_copy(source: str, dest: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", source, dest], check=True, timeout=120,
                   capture_output=True)


@pytest.fixture(scope="module")
def archives(work: Path) -> Path:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    out = work / "made"
    out.mkdir()
    skopeo_copy(f"oci:{work}/layout:latest", f"oci-archive:{out}/oci.tar:v1")
    skopeo_copy(f"oci:{work}/layout:latest", f"docker-archive:{out}/docker.tar:src:v1")
    for name in ("oci.tar", "docker.tar"):
        data = (out / name).read_bytes()
        (out / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
        (out / f"{name}.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    return out


def unpack_and_compare(work: Path, image: str, bundle: Path) -> None:
    result = run_cli("-q", image, bundle)
    assert result.returncode == 0, (image, result.stderr)
    assert tree(bundle) == expected_tree(work), image
    expected_config = json.loads((work / "expected" / "config.json").read_text())
    assert json.loads((bundle / "config.json").read_text()) == expected_config


@needs_skopeo
@pytest.mark.parametrize("image", [
    "oci-archive:{a}/oci.tar:v1", "oci-archive:{a}/oci.tar", "{a}/oci.tar", "{a}/oci.tar:v1",
    "{a}/oci.tar.gz", "oci-archive:{a}/oci.tar.zst:v1",
    "docker-archive:{a}/docker.tar:src:v1", "docker-archive:{a}/docker.tar",
    "{a}/docker.tar:docker.io/library/src:v1", "docker-archive:{a}/docker.tar:@0",
    "{a}/docker.tar.gz:src:v1", "{a}/docker.tar.zst",
])
def test_skopeo_archives_unpack_like_the_layout(
    work: Path, archives: Path, tmp_path: Path, image: str
) -> None:
    unpack_and_compare(work, image.format(a=archives), tmp_path / "bundle")


@needs_skopeo
def test_unknown_tag_in_docker_archive_lists_tags(archives: Path, tmp_path: Path) -> None:
    result = run_cli(f"docker-archive:{archives}/docker.tar:other:v9", tmp_path / "bundle")
    assert result.returncode == 3
    assert "no image tagged 'other:v9'" in result.stderr
    assert "docker.io/library/src:v1" in result.stderr
    assert not (tmp_path / "bundle").exists()


@needs_skopeo
def test_unknown_tag_in_oci_archive(archives: Path, tmp_path: Path) -> None:
    result = run_cli(f"oci-archive:{archives}/oci.tar:nope", tmp_path / "bundle")
    assert result.returncode == 3 and "no image tagged 'nope'" in result.stderr


@needs_skopeo
def test_docker_archive_transport_on_an_oci_archive_fails_clearly(
    archives: Path, tmp_path: Path
) -> None:
    result = run_cli(f"docker-archive:{archives}/oci.tar", tmp_path / "bundle")
    assert result.returncode == 3 and "manifest.json" in result.stderr


# -- docker-archives built by hand: legacy layout, compressed layers, several images ----------


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def legacy_archive(work: Path, path: Path, *, corrupt_layer: bool = False,
                   compressed: str | None = None, images: int = 1) -> Path:
    """`docker save` style: `<id>/layer.tar` (one a symlink to a top-level file), HEX.json."""
    config = config_bytes(work / "layout")
    tars = layer_tars(work / "layout")
    manifest = []
    with tarfile.open(path, "w") as tar:
        add(tar, f"{sha(config)}.json", config)
        layer_names = []
        for number, data in enumerate(tars):
            if corrupt_layer and number == 1:
                data = data.replace(b"layer two", b"layer 2!!")
            layer_id = sha(f"id{number}".encode())
            add(tar, f"{layer_id}/VERSION", b"1.0")
            if compressed == "named" and number == 0:
                blob = gzip.compress(data)
                add(tar, f"blobs/sha256/{sha(blob)}", blob)
                layer_names.append(f"blobs/sha256/{sha(blob)}")
            elif compressed == "anonymous" and number == 0:
                add(tar, f"{layer_id}/layer.tar.gz", gzip.compress(data))
                layer_names.append(f"{layer_id}/layer.tar.gz")
            elif number == 2:  # as skopeo writes it: a symlink to HEX.tar
                add(tar, f"{sha(data)}.tar", data)
                add_symlink(tar, f"{layer_id}/layer.tar", f"../{sha(data)}.tar")
                layer_names.append(f"{layer_id}/layer.tar")
            else:
                add(tar, f"{layer_id}/layer.tar", data)
                layer_names.append(f"{layer_id}/layer.tar")
        for number in range(images):
            manifest.append({"Config": f"{sha(config)}.json",
                             "RepoTags": [f"example.com/team/img{number}:v{number}"],
                             "Layers": layer_names})
        add(tar, "manifest.json", json.dumps(manifest).encode())
        add(tar, "repositories", b"{}")
    return path


@pytest.mark.parametrize("compressed", [None, "named", "anonymous"])
def test_legacy_docker_archive(work: Path, tmp_path: Path, compressed: str | None) -> None:
    archive = legacy_archive(work, tmp_path / "legacy.tar", compressed=compressed)
    unpack_and_compare(work, f"docker-archive:{archive}", tmp_path / "bundle")


def test_legacy_layer_descriptors(work: Path, tmp_path: Path) -> None:
    """Uncompressed layers are described by their diff_id; a named gzip blob by its name."""
    archive = legacy_archive(work, tmp_path / "legacy.tar", compressed="named")
    source, ref, _ = open_source(str(archive))
    with source:
        assert isinstance(source, DockerArchive)
        image = resolve_image(source, ref, None)
    layers = image.layers
    assert layers[0].descriptor.media_type.endswith(".gzip")
    assert layers[0].descriptor.digest != layers[0].diff_id
    for layer in layers[1:]:
        assert layer.descriptor.digest == layer.diff_id
        assert layer.descriptor.media_type == "application/vnd.docker.image.rootfs.diff.tar"
    assert str(image.config_descriptor.digest) == "sha256:" + sha(config_bytes(work / "layout"))


def test_legacy_corrupt_layer_fails_without_bundle(work: Path, tmp_path: Path) -> None:
    archive = legacy_archive(work, tmp_path / "bad.tar", corrupt_layer=True)
    result = run_cli(f"docker-archive:{archive}", tmp_path / "bundle")
    assert result.returncode == 3, result.stderr
    assert "digest is sha256:" in result.stderr and "layer.tar" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_config_whose_name_lies(work: Path, tmp_path: Path) -> None:
    config = config_bytes(work / "layout")
    path = tmp_path / "lying.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, f"{'0' * 64}.json", config)
        add(tar, "manifest.json", json.dumps([{"Config": f"{'0' * 64}.json", "Layers": []}])
            .encode())
    result = run_cli(f"docker-archive:{path}", tmp_path / "bundle")
    assert result.returncode == 3 and "its name says sha256:000" in result.stderr


def test_member_names_never_leave_the_archive(work: Path, tmp_path: Path) -> None:
    """A Config path with `..` names an archive member (missing), never a host file."""
    path = tmp_path / "escape.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "manifest.json", json.dumps(
            [{"Config": "../../../../etc/hostname", "Layers": []}]).encode())
    with pytest.raises(ImageError) as excinfo:
        open_source(f"docker-archive:{path}")
    assert "config '../../../../etc/hostname' is missing from the archive" in str(excinfo.value)


def test_several_images_choose_by_tag_or_index(work: Path, tmp_path: Path) -> None:
    archive = legacy_archive(work, tmp_path / "multi.tar", images=2)
    with DockerArchive(str(archive)) as source:
        assert source.select("example.com/team/img1:v1") == source.select("@1")
        assert source.select("@0") == str(source.images[0].manifest.digest)
        with pytest.raises(ImageError, match=r"holds 2 images.*img0:v0, example\.com/team/img1"):
            source.select(None)
        with pytest.raises(ImageError, match="no image @2"):
            source.select("@2")
    unpack_and_compare(work, f"{archive}:example.com/team/img1:v1", tmp_path / "bundle")
    result = run_cli(f"docker-archive:{archive}", tmp_path / "bundle2")
    assert result.returncode == 3 and "choose one with docker-archive:" in result.stderr


@pytest.mark.parametrize(("ref", "normal"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1", "docker.io/library/busybox:1"),
    ("user/app:2", "docker.io/user/app:2"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("example.com/a/b:c", "example.com/a/b:c"),
])
def test_tag_normalisation(ref: str, normal: str) -> None:
    assert normalise_tag(ref) == normal


# -- oci-archive corruption and truncation -----------------------------------------------------


def oci_archive_of(layout: Path, path: Path, *, flip_in: str | None = None) -> Path:
    """An oci-archive of a layout, made with tarfile; optionally one blob corrupted."""
    with tarfile.open(path, "w") as tar:
        for file in sorted(layout.rglob("*")):
            name = str(file.relative_to(layout))
            if file.is_dir():
                continue
            data = file.read_bytes()
            if flip_in and name.endswith(flip_in):
                data = data[:-1] + bytes([data[-1] ^ 1])
            add(tar, name, data)
    return path


def test_oci_archive_made_by_tarfile(work: Path, tmp_path: Path) -> None:
    archive = oci_archive_of(work / "layout", tmp_path / "plain.tar")
    unpack_and_compare(work, str(archive), tmp_path / "bundle")


def test_oci_archive_corrupt_blob(work: Path, tmp_path: Path) -> None:
    config = sha(config_bytes(work / "layout"))
    layers = sorted((work / "layout/blobs/sha256").iterdir(), key=lambda p: -p.stat().st_size)
    biggest = layers[0].name
    assert biggest != config
    archive = oci_archive_of(work / "layout", tmp_path / "bad.tar", flip_in=biggest)
    result = run_cli(str(archive), tmp_path / "bundle")
    assert result.returncode == 3
    assert f"sha256:{biggest}" in result.stderr and "oci-unpack: error:" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_truncated_gzip_archive(work: Path, tmp_path: Path) -> None:
    archive = oci_archive_of(work / "layout", tmp_path / "a.tar")
    data = gzip.compress(archive.read_bytes())
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) * 3 // 4])
    result = run_cli(tmp_path / "cut.tar.gz", tmp_path / "bundle")
    assert result.returncode == 3, result.stderr
    assert not (tmp_path / "bundle").exists()


def test_unsupported_compression_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.tar.xz").write_bytes(b"\xfd7zXZ\x00" + b"\0" * 600)
    result = run_cli(f"oci-archive:{tmp_path}/a.tar.xz", tmp_path / "bundle")
    assert result.returncode == 3 and "xz-compressed archives are not supported" in result.stderr


def test_a_tar_that_is_neither_kind(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        add(tar, "hello.txt", b"hi\n")
    result = run_cli(tmp_path / "other.tar", tmp_path / "bundle")
    assert result.returncode == 3 and "neither an oci-archive" in result.stderr


# -- TarIndex: random access without extraction ------------------------------------------------


def many_member_tar(count: int = 60) -> tuple[bytes, dict[str, bytes]]:
    rng = random.Random(7)
    contents = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for number in range(count):
            name = f"dir{number % 3}/{'long-' * (number % 30)}member{number}"
            data = rng.randbytes(rng.randrange(0, 40000))
            contents[name] = data
            add(tar, name, data)
    return buffer.getvalue(), contents


def check_random_access(path: Path, contents: dict[str, bytes]) -> TarIndex:
    index = TarIndex(str(path))
    names = list(contents)
    random.Random(3).shuffle(names)
    for name in [*names, *reversed(names)]:
        member = index.member(name, "member")
        assert b"".join(index.chunks(member)) == contents[name], name
        assert index.head(member, 5) == contents[name][:5]
    return index


@pytest.mark.parametrize("kind", ["plain", "gzip", "gzip-multi", "gzip-padded", "zstd"])
def test_random_access_in_any_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(seekable_module, "CHECKPOINT_SPACING", 64 << 10)
    data, contents = many_member_tar()
    if kind == "gzip":
        stored = gzip.compress(data)
    elif kind == "gzip-multi":  # concatenated gzip members, split mid-header
        stored = gzip.compress(data[:12345]) + gzip.compress(data[12345:])
    elif kind == "gzip-padded":
        stored = gzip.compress(data) + b"\0" * 1024
    elif kind == "zstd":
        stored = zstandard.ZstdCompressor().compress(data)
    else:
        stored = data
    (tmp_path / "a").write_bytes(stored)
    with check_random_access(tmp_path / "a", contents) as index:
        assert index.compression.value == {"plain": "none", "zstd": "zstd"}.get(kind, "gzip")
        if kind == "gzip":
            view = index._file
            checkpoints = len(view._checkpoints)  # type: ignore[attr-defined]
            assert len(data) // (64 << 10) - 2 <= checkpoints <= len(data) // (64 << 10) + 1


def test_links_between_members(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "l.tar", "w") as tar:
        add(tar, "./real/file", b"content")
        add_symlink(tar, "a/sym", "../real/file")
        info = tarfile.TarInfo("hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "real/file"
        tar.addfile(info)
        add_symlink(tar, "loop1", "loop2")
        add_symlink(tar, "loop2", "loop1")
        add_symlink(tar, "out", "../../etc/passwd")
    with TarIndex(str(tmp_path / "l.tar")) as index:
        for name in ("real/file", "/real/file", "a/sym", "hard"):
            member = index.find(name)
            assert member is not None and member.name == "real/file", name
        with pytest.raises(ImageError, match="too many links"):
            index.find("loop1")
        assert index.find("out") is None  # resolves to etc/passwd inside: not present


def test_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(gzip.compress(b"just text, " * 100))
    with pytest.raises(ImageError, match="not a tar archive"):
        TarIndex(str(tmp_path / "x"))


# -- inspect -----------------------------------------------------------------------------------


@needs_skopeo
def test_inspect_archives_json(work: Path, archives: Path) -> None:
    results = {}
    for image in (f"{work}/layout", f"oci-archive:{archives}/oci.tar.gz",
                  f"docker-archive:{archives}/docker.tar"):
        result = run_cli("inspect", "--json", image)
        assert result.returncode == 0, result.stderr
        results[image] = json.loads(result.stdout)
    layout, oci, docker = results.values()
    for report in (layout, oci, docker):
        assert report["entrypoint"] == ["/bin/sh"] and report["cmd"] == ["-c", "true"]
        assert report["env"] == ["PATH=/bin", "A=1"] and report["labels"] == {"test": "sources"}
        assert report["user"] == "0:0" and report["workdir"] == "/srv"
        assert len(report["layers"]) == 3 and report["platforms"] == [report["platform"]]
        assert [layer["diff_id"] for layer in report["layers"]] == [
            layer["diff_id"] for layer in layout["layers"]]
    assert docker["transport"] == "docker-archive"
    assert docker["manifest_media_type"].endswith("distribution.manifest.v2+json")
    for layer in docker["layers"]:  # docker-archive layers are plain tars: sizes known
        assert layer["uncompressed_size"] == layer["size"] and layer["digest"] == layer["diff_id"]
    assert layout["layers"][0]["uncompressed_size"] is None  # gzip: not known without reading
    assert layout["layers"][1]["uncompressed_size"] == layout["layers"][1]["size"]
    assert docker["layers"][0]["size"] > BIG_SIZE


def test_inspect_table(work: Path) -> None:
    result = run_cli("inspect", work / "layout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Image", f"oci:{work}/layout"]
    assert any(line.startswith("Entrypoint") and '["/bin/sh"]' in line for line in lines)
    assert any(line.split()[:1] == ["Labels"] and "test=sources" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if "MEDIA TYPE" in line)
    assert lines[header].split() == ["#", "DIGEST", "MEDIA", "TYPE", "SIZE", "UNCOMPRESSED"]
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[0][2] == "layer.v1.tar+gzip" and rows[0][-1] == "-"
    assert rows[1][2] == "layer.v1.tar"


def test_inspect_multiarch_lists_platforms(images: Path) -> None:
    result = run_cli("inspect", "--json", "--platform", "linux/arm64", images / "multiarch")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["platforms"] == ["linux/amd64", "linux/arm/v7", "linux/arm64", "linux/s390x"]
    assert report["platform"] == "linux/arm64"


def test_archives_read_in_place(work: Path, tmp_path: Path) -> None:
    """Opening and resolving an archive reads members where they are: OciArchive over TarIndex."""
    archive = oci_archive_of(work / "layout", tmp_path / "a.tar")
    source, ref, _ = open_source(str(archive))
    with source:
        assert isinstance(source, OciArchive)
        image = resolve_image(source, ref, None)
        layer = image.layers[0].descriptor
        seen: list[int] = []
        data = b"".join(source.blob_chunks(layer, seen.append))
    assert len(data) == layer.size == sum(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]
