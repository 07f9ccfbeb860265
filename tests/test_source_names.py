"""Names, mirrors and credentials: registries.conf, short names, credential helpers.

The configuration is checked on its own first (prefixes, mirrors, blocked, version 1,
drop-ins, aliases, short-name modes, helpers run as scripts); then pulls from Debian's
docker-registry on 127.0.0.1: mirror order and pull-from-mirror, blocked and insecure,
short names through aliases and search registries, a helper in front of an htpasswd
registry, and skopeo given the same registries.conf choosing the same registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from registry import (
    PASSWORD,
    REFRESH_TOKEN,
    REGISTRY_BINARY,
    USER,
    Registry,
    TokenServer,
    free_port,
    htpasswd_file,
    make_ca,
    running_registry,
)

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, reg
from unpack import NetworkError, SourceOptions, UnpackOptions, UsageError, unpack_image
from unpack.source import discovery, registriesconf
from unpack.source.auth import find_credentials
from unpack.source.registriesconf import BlockedError, load


@pytest.fixture(autouse=True)
def isolated(no_user_auth_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own and no system drop-ins (in this process)."""
    monkeypatch.setattr(registriesconf, "SYSTEM_DIR", str(tmp_path / "no-system-dir"))
    return no_user_auth_files


def conf_file(tmp_path: Path, text: str, name: str = "registries.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- registries.conf ---------------------------------------------------------------------------


def test_longest_prefix_wins_and_its_location_rewrites_the_name(tmp_path: Path) -> None:
    conf = load(str(conf_file(tmp_path, """
[[registry]]
prefix = "example.com"
location = "one.example.net"
[[registry]]
prefix = "example.com/team"
location = "two.example.net/mirrored/team"
[[registry]]
prefix = "*.corp.test"
insecure = true
""")), home=str(tmp_path / "home"))
    [source] = conf.pull_sources("example.com/team/app:1", digested=False)
    assert (source.name, source.endpoint.location) == (
        "two.example.net/mirrored/team/app:1", "two.example.net/mirrored/team")
    assert conf.pull_sources("example.com/other:1", False)[0].name == "one.example.net/other:1"
    assert conf.pull_sources("example.com:5000/x:1", False)[0].name == "one.example.net:5000/x:1"
    assert conf.pull_sources("example.community/x:1", False)[0].name == "example.community/x:1"
    [wild] = conf.pull_sources("a.b.corp.test/x@sha256:" + "1" * 64, digested=True)
    assert wild.name == "a.b.corp.test/x@sha256:" + "1" * 64 and wild.endpoint.insecure
    assert conf.find("corp.test/x") is None


def test_mirrors_first_as_pull_from_mirror_says(tmp_path: Path) -> None:
    conf = load(str(conf_file(tmp_path, """
[[registry]]
location = "registry.test/team"
[[registry.mirror]]
location = "all.test/team"
[[registry.mirror]]
location = "digests.test/team"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.test/team"
pull-from-mirror = "tag-only"
insecure = true
""")), home=str(tmp_path / "home"))
    tagged = conf.pull_sources("registry.test/team/app:1", digested=False)
    assert [(s.name, s.mirror) for s in tagged] == [
        ("all.test/team/app:1", True), ("tags.test/team/app:1", True),
        ("registry.test/team/app:1", False)]
    assert tagged[1].endpoint.insecure and not tagged[0].endpoint.insecure
    digested = conf.pull_sources("registry.test/team/app@sha256:" + "a" * 64, digested=True)
    assert [s.endpoint.location for s in digested] == [
        "all.test/team", "digests.test/team", "registry.test/team"]


def test_blocked(tmp_path: Path) -> None:
    conf = load(str(conf_file(tmp_path, '[[registry]]\nlocation = "bad.test"\nblocked = true\n')),
                home=str(tmp_path / "home"))
    with pytest.raises(BlockedError, match=r"bad\.test/x:1: the registry is blocked in") as raised:
        conf.pull_sources("bad.test/x:1", digested=False)
    assert raised.value.exit_code == 5


def test_version_1_tables_are_converted(tmp_path: Path) -> None:
    conf = load(str(conf_file(tmp_path, """
[registries.search]
registries = ["one.test", "two.test"]
[registries.insecure]
registries = ["plain.test"]
[registries.block]
registries = ["bad.test"]
""")), home=str(tmp_path / "home"))
    assert conf.search == ("one.test", "two.test")
    assert conf.pull_sources("plain.test/x:1", False)[0].endpoint.insecure
    with pytest.raises(BlockedError):
        conf.pull_sources("bad.test/x:1", False)


def test_drop_ins_replace_entries_and_settings_and_add_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_ins = tmp_path / "d"
    drop_ins.mkdir()
    monkeypatch.setattr(registriesconf, "SYSTEM_DIR", str(drop_ins))
    main = conf_file(tmp_path, """
unqualified-search-registries = ["one.test"]
short-name-mode = "permissive"
[[registry]]
location = "a.test"
insecure = true
[aliases]
"app" = "one.test/team/app"
""")
    conf_file(drop_ins, '[[registry]]\nlocation = "a.test"\n[aliases]\n"tool" = "b.test/tool"\n',
              "20-second.conf")
    conf_file(drop_ins, 'unqualified-search-registries = ["two.test", "three.test"]\n',
              "10-first.conf")
    conf_file(drop_ins, "this is not TOML, and not a .conf either", "notes.txt")
    conf = load(str(main), home=str(tmp_path / "home"))
    assert conf.search == ("two.test", "three.test")
    assert conf.search_origin == str(drop_ins / "10-first.conf")
    assert conf.mode == "permissive"
    assert not conf.pull_sources("a.test/x:1", False)[0].endpoint.insecure  # replaced
    assert set(conf.aliases) == {"app", "tool"}


def test_the_alias_cache_comes_after_the_configured_aliases(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cache = home / ".cache" / "containers"
    cache.mkdir(parents=True)
    (cache / "short-name-aliases.conf").write_text(
        '[aliases]\n"app" = "cache.test/app"\n"other" = "cache.test/other"\n')
    conf = load(str(conf_file(tmp_path, '[aliases]\n"app" = "conf.test/app"\n')), home=str(home))
    assert conf.aliases["app"][0] == "conf.test/app"
    assert conf.aliases["other"][0] == "cache.test/other"


def test_user_file_instead_of_the_system_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "containers").mkdir(parents=True)
    (home / ".config/containers/registries.conf").write_text(
        'unqualified-search-registries = ["mine.test"]\n')
    assert load(None, home=str(home)).search == ("mine.test",)


@pytest.mark.parametrize(("text", "message"), [
    ('[[registry]]\nlocation = "https://x.test"\n', "URI schemes are not supported"),
    ('[[registry]]\nprefix = "x.test"\n', "location is unset"),
    ('short-name-mode = "sometimes"\n', "short-name-mode 'sometimes'"),
    ('[[registry]]\nlocation = "x.test"\npull-from-mirror = "all"\n', "for mirrors only"),
    ('[[registry]]\nlocation = "x.test"\n[[registry.mirror]]\nlocation = "m.test"\n'
     'pull-from-mirror = "never"\n', "pull-from-mirror 'never'"),
    ('[aliases]\n"app" = "app"\n', "fully qualified"),
    ("[[registry]\n", "not valid TOML"),
    ('unqualified-search-registries = "one.test"\n', "must list strings"),
    ("registry = [1, 2]\n", "must be an array of tables"),
    ('[[registry]]\nlocation = "x.test"\nmirror = ["m.test"]\n',
     "mirror must be an array of tables"),
    ('[registries]\nsearch = ["a.test"]\n', "[registries.search] must be a table"),
])
def test_bad_configuration_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load(str(conf_file(tmp_path, text)), home=str(tmp_path / "home"))


# -- short names -------------------------------------------------------------------------------


def resolved(text: str, tmp_path: Path, conf_text: str) -> list[str]:
    conf = load(str(conf_file(tmp_path, conf_text)), home=str(tmp_path / "home"))
    found = discovery.resolve_short_name(text, conf)
    return [f"{c.registry}/{c.repository}:{c.tag}" if c.digest is None
            else f"{c.registry}/{c.repository}@{c.digest}" for c in found.candidates]


def test_an_alias_wins_and_keeps_the_tag(tmp_path: Path) -> None:
    text = '[aliases]\n"app" = "a.test/team/app"\nunqualified-search-registries = ["b.test"]\n'
    text = 'unqualified-search-registries = ["b.test"]\n[aliases]\n"app" = "a.test/team/app"\n'
    assert resolved("app:2", tmp_path, text) == ["a.test/team/app:2"]
    assert resolved("app", tmp_path, text) == ["a.test/team/app:latest"]
    assert resolved("other", tmp_path, text) == ["b.test/other:latest"]


def test_search_registries_by_mode(tmp_path: Path) -> None:
    search = 'unqualified-search-registries = ["one.test", "docker.io"]\n'
    assert resolved("team/app@sha256:" + "b" * 64, tmp_path,
                    search + 'short-name-mode = "permissive"\n') == [
        "one.test/team/app@sha256:" + "b" * 64, "docker.io/team/app@sha256:" + "b" * 64]
    assert resolved("busybox", tmp_path, search + 'short-name-mode = "disabled"\n') == [
        "one.test/busybox:latest", "docker.io/library/busybox:latest"]
    with pytest.raises(UsageError, match=r"ambiguous in enforcing mode \(one.test/busybox, "
                                         r"docker.io/library/busybox"):
        resolved("busybox", tmp_path, search)  # enforcing is the default
    assert resolved("busybox", tmp_path, 'unqualified-search-registries = ["one.test"]\n') == [
        "one.test/busybox:latest"]  # one search registry: nothing to choose


def test_no_alias_and_no_search_registry(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no alias and no unqualified-search registries"):
        resolved("busybox", tmp_path, "")


def test_a_qualified_name_is_used_as_it_is(tmp_path: Path) -> None:
    assert resolved("localhost:5000/x", tmp_path, '[aliases]\n"x" = "a.test/x"\n') == [
        "localhost:5000/x:latest"]


# -- credential helpers ------------------------------------------------------------------------


def helper(directory: Path, name: str, script: str) -> Path:
    """An executable `docker-credential-NAME` running `script` (sh)."""
    directory.mkdir(exist_ok=True)
    path = directory / f"docker-credential-{name}"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


SECRET = "hunter2-do-not-print"


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    helper(bin_dir, "good", f'cat > "{tmp_path}/asked"; echo \'{{"ServerURL": "x", '
           f'"Username": "{USER}", "Secret": "{PASSWORD}"}}\'')
    helper(bin_dir, "token", 'echo \'{"Username": "<token>", "Secret": "refresh-me"}\'')
    helper(bin_dir, "none", 'echo "credentials not found in native keychain"; exit 1')
    helper(bin_dir, "fails", f'echo "{SECRET}"; exit 3')
    helper(bin_dir, "garbage", f'echo "{SECRET} is not json"')
    helper(bin_dir, "hangs", "sleep 30")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def auth_file(path: Path, **content: object) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def test_cred_helpers_come_first_then_auths_then_creds_store(helpers: Path) -> None:
    config = auth_file(helpers / "auth.json", credHelpers={"reg.test:5000": "good"},
                       auths={"reg.test:5000": {"auth": "dTpw"}, "other.test": {"auth": "dTpw"}},
                       credsStore="token")
    found = find_credentials("reg.test:5000", "team/app", config)
    assert found is not None and (found.username, found.password) == (USER, PASSWORD)
    assert (helpers / "asked").read_text() == "reg.test:5000"  # the server on stdin
    found = find_credentials("other.test", "app", config)
    assert found is not None and (found.username, found.password) == ("u", "p")
    found = find_credentials("third.test", "app", config)
    assert found is not None and found.identity_token == "refresh-me"
    assert SECRET not in repr(found) and "refresh-me" not in repr(found)


def test_docker_hub_is_asked_for_by_its_legacy_url(helpers: Path) -> None:
    config = auth_file(helpers / "auth.json", credHelpers={"docker.io": "good"})
    assert find_credentials("docker.io", "library/busybox", config) is not None
    assert (helpers / "asked").read_text() == "https://index.docker.io/v1/"


def test_a_helper_with_nothing_means_no_credentials(helpers: Path) -> None:
    config = auth_file(helpers / "auth.json", credHelpers={"reg.test": "none"})
    assert find_credentials("reg.test", "app", config) is None


@pytest.mark.parametrize(("name", "message"), [
    ("missing", "docker-credential-missing (credHelpers in {auth}): not found on PATH"),
    ("fails", "docker-credential-fails (credHelpers in {auth}): failed (exit 3) for reg.test"),
    ("garbage", "its answer for reg.test is not the expected JSON"),
    ("hangs", "docker-credential-hangs (credHelpers in {auth}): no answer within 0.5 s"),
])
def test_a_broken_helper_is_one_line_naming_it_never_its_output(
    helpers: Path, name: str, message: str
) -> None:
    config = auth_file(helpers / "auth.json", credHelpers={"reg.test": name})
    with pytest.raises(NetworkError) as raised:
        find_credentials("reg.test", "app", config, helper_timeout=0.5)
    text = str(raised.value)
    assert message.format(auth=config) in text and "\n" not in text
    assert SECRET not in text


# -- against registries on 127.0.0.1 -------------------------------------------------------------

needs_registry = pytest.mark.skipif(
    not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None,
    reason="docker-registry and skopeo are needed (apt-get install docker-registry skopeo)")


def two_images(root: Path) -> tuple[Path, Path]:
    """Two one-layer images told apart by /which: 'mirror' and 'origin'."""
    layouts = []
    for which in ("mirror", "origin"):
        out = LayoutWriter(root / which)
        layer = out.add_layer(build_tar([reg("which", which.encode())]), "gzip")
        out.tag(out.add_image([layer], {"config": {"Cmd": ["/which"]}}), "v1")
        out.write()
        layouts.append(root / which)
    return layouts[0], layouts[1]


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """Two plain-HTTP registries holding `team/app:v1`: a mirror's copy, the origin's."""
    if not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed")
    root = tmp_path_factory.mktemp("names")
    mirror_image, origin_image = two_images(root)
    with running_registry(root / "m") as mirror, running_registry(root / "o") as origin:
        mirror.push(mirror_image, "v1", "team/app:v1")
        origin.push(origin_image, "v1", "team/app:v1")
        mirror.push(mirror_image, "v1", "only-mirror/app:v1")
        yield mirror, origin


def pulled(bundle: Path) -> str:
    return (bundle / "rootfs" / "which").read_text()


def unpack_with(conf: Path, image: str, bundle: Path, *more: str) -> subprocess.CompletedProcess:
    return run_cli("--registries-conf", conf, "--json", *more, image, bundle)


@needs_registry
def test_a_mirror_is_tried_first_then_the_location(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    mirror, origin = registries
    down = f"127.0.0.1:{free_port()}"
    conf = conf_file(tmp_path, f"""
[[registry]]
prefix = "origin.test"
location = "{origin.host}"
insecure = true
[[registry.mirror]]
location = "{down}"
insecure = true
[[registry.mirror]]
location = "{mirror.host}"
insecure = true
""")
    result = unpack_with(conf, "origin.test/team/app:v1", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert pulled(tmp_path / "a") == "mirror"  # the first mirror is down: the second one
    report = json.loads(result.stdout)
    assert report["image"] == "docker://origin.test/team/app:v1"  # the name asked for
    assert report["short_name"] == "origin.test/team/app:v1"
    # a name the mirror lacks: the location
    result = unpack_with(conf, "origin.test/only-origin/app:v1", tmp_path / "b")
    assert result.returncode != 0  # nobody has it
    assert "no pull source has the image" in result.stderr and down in result.stderr


@needs_registry
def test_pull_from_mirror_digest_only_skips_the_mirror_for_a_tag(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    mirror, origin = registries
    conf = conf_file(tmp_path, f"""
[[registry]]
prefix = "origin.test"
location = "{origin.host}"
insecure = true
[[registry.mirror]]
location = "{mirror.host}"
insecure = true
pull-from-mirror = "digest-only"
""")
    result = unpack_with(conf, "docker://origin.test/team/app:v1", tmp_path / "tag")
    assert result.returncode == 0, result.stderr
    assert pulled(tmp_path / "tag") == "origin"
    digest = json.loads(run_cli("inspect", "--json", "--tls-verify=false",
                                f"docker://{mirror.host}/team/app:v1").stdout)["manifest"]
    result = unpack_with(conf, f"docker://origin.test/team/app@{digest}", tmp_path / "digest")
    assert result.returncode == 0, result.stderr
    assert pulled(tmp_path / "digest") == "mirror"


@needs_registry
def test_blocked_and_insecure(registries: tuple[Registry, Registry], tmp_path: Path) -> None:
    mirror, origin = registries
    conf = conf_file(tmp_path, f"""
[[registry]]
location = "{origin.host}"
blocked = true
[[registry]]
location = "{mirror.host}"
insecure = true
""")
    result = unpack_with(conf, f"docker://{origin.host}/team/app:v1", tmp_path / "b")
    assert result.returncode == 5 and "the registry is blocked in" in result.stderr
    assert not (tmp_path / "b").exists()
    # plain HTTP without --tls-verify=false: insecure for this registry only
    result = unpack_with(conf, f"docker://{mirror.host}/team/app:v1", tmp_path / "i")
    assert result.returncode == 0, result.stderr
    plain = conf_file(tmp_path, "", "empty.conf")
    result = unpack_with(plain, f"docker://{mirror.host}/team/app:v1", tmp_path / "s")
    assert result.returncode == 5  # TLS to a plain-HTTP registry


@needs_registry
def test_short_names_through_aliases_and_search_registries(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    mirror, origin = registries
    down = f"127.0.0.1:{free_port()}"
    insecure = "".join(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
                       for host in (mirror.host, origin.host, down))
    search = f'unqualified-search-registries = ["{down}", "{origin.host}", "{mirror.host}"]\n'
    permissive = conf_file(tmp_path, search + 'short-name-mode = "permissive"\n' + insecure,
                           "permissive.conf")
    result = unpack_with(permissive, "team/app:v1", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert pulled(tmp_path / "p") == "origin"  # the first search registry that has it
    report = json.loads(result.stdout)
    assert report["image"] == f"docker://{origin.host}/team/app:v1"
    assert report["short_name"] == "team/app:v1"
    assert report["resolution"] == f"unqualified-search registries in {permissive}"
    assert f"team/app:v1: pulling docker://{origin.host}/team/app:v1" in result.stderr
    enforcing = conf_file(tmp_path, search + insecure, "enforcing.conf")
    result = unpack_with(enforcing, "team/app:v1", tmp_path / "e")
    assert result.returncode == 2 and "ambiguous in enforcing mode" in result.stderr
    assert not (tmp_path / "e").exists()
    aliased = conf_file(tmp_path, search + insecure +
                        f'[aliases]\n"app" = "{mirror.host}/team/app"\n', "aliased.conf")
    result = unpack_with(aliased, "app:v1", tmp_path / "a", "-q")
    assert result.returncode == 0, result.stderr
    assert pulled(tmp_path / "a") == "mirror" and result.stderr == ""  # -q: nothing said
    assert json.loads(result.stdout)["resolution"] == f"alias in {aliased}"


@needs_registry
@pytest.mark.parametrize("case", ["mirror", "digest-only", "rewrite"])
def test_skopeo_picks_the_same_registry(registries: tuple[Registry, Registry], tmp_path: Path,
                                        case: str) -> None:
    """`skopeo --registries-conf` with the same file: the same manifest (the two registries
    hold different images under the same name)."""
    mirror, origin = registries
    mirror_block = f'[[registry.mirror]]\nlocation = "{mirror.host}/team"\ninsecure = true\n'
    if case == "digest-only":
        mirror_block += 'pull-from-mirror = "digest-only"\n'
    conf = conf_file(tmp_path, f'[[registry]]\nprefix = "names.test/team"\n'
                     f'location = "{origin.host}/team"\ninsecure = true\n'
                     + ("" if case == "rewrite" else mirror_block))
    image = "docker://names.test/team/app:v1"
    ours = unpack_with(conf, image, tmp_path / "b")
    assert ours.returncode == 0, ours.stderr
    copied = subprocess.run(["skopeo", "--registries-conf", str(conf), "copy", "--quiet",
                             image, f"oci:{tmp_path / 'skopeo'}:v1"], capture_output=True,
                            text=True, timeout=120, env={**os.environ,
                                                         "REGISTRY_AUTH_FILE": "/nonexistent"})
    assert copied.returncode == 0, copied.stderr
    index = json.loads((tmp_path / "skopeo" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == json.loads(ours.stdout)["manifest"]
    assert pulled(tmp_path / "b") == ("mirror" if case == "mirror" else "origin")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A TLS registry with htpasswd auth, holding `team/app:v1`."""
    if not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None \
            or shutil.which("htpasswd") is None:
        pytest.skip("docker-registry, skopeo and htpasswd are needed")
    root = tmp_path_factory.mktemp("guarded")
    image, _ = two_images(root)
    certs = make_ca(root / "tls")
    with running_registry(root / "r", certs=certs, htpasswd=htpasswd_file(root / "tls")) as r:
        r.push(image, "v1", "team/app:v1", creds=f"{USER}:{PASSWORD}")
        yield r


@needs_registry
@pytest.mark.parametrize(("name", "code", "message"), [
    ("good", 0, ""),
    ("wrong", 5, "the registry refused the credentials"),
    ("missing", 5, "docker-credential-missing (credHelpers in "),
    ("garbage", 5, "is not the expected JSON"),
])
def test_a_credential_helper_in_front_of_a_registry(
    guarded: Registry, helpers: Path, name: str, code: int, message: str
) -> None:
    helper(helpers / "bin", "wrong", f'echo \'{{"Username": "{USER}", "Secret": "nope"}}\'')
    assert guarded.certs is not None
    config = auth_file(helpers / "auth.json", credHelpers={guarded.host: name})
    result = run_cli("--authfile", config, "--cert-dir", guarded.certs.cert_dir, "--debug",
                     f"docker://{guarded.host}/team/app:v1", helpers / "bundle")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert SECRET not in result.stderr and PASSWORD not in result.stderr
    if code == 0:
        assert pulled(helpers / "bundle") == "mirror"


@needs_registry
def test_a_hanging_helper_times_out(guarded: Registry, helpers: Path) -> None:
    assert guarded.certs is not None
    config = auth_file(helpers / "auth.json", credHelpers={guarded.host: "hangs"})
    options = UnpackOptions(source=SourceOptions(authfile=config, helper_timeout=0.5,
                                                 cert_dir=str(guarded.certs.cert_dir)))
    with pytest.raises(NetworkError, match=r"docker-credential-hangs .* no answer within 0\.5 s"):
        unpack_image(f"docker://{guarded.host}/team/app:v1", helpers / "bundle", options)
    assert not (helpers / "bundle").exists()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Registry, TokenServer]]:
    """A registry behind a token server (no anonymous pulls), holding `team/app:v1`."""
    if not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed")
    root = tmp_path_factory.mktemp("tokens")
    image, _ = two_images(root)
    (root / "t").mkdir()
    server = TokenServer(root / "t")
    with server.running(), running_registry(root / "r", token=server) as registry:
        registry.push(image, "v1", "team/app:v1", creds=f"{USER}:{PASSWORD}")
        yield registry, server


@needs_registry
@pytest.mark.parametrize(("secret", "code"), [(REFRESH_TOKEN, 0), ("stale-token", 5)])
def test_an_identity_token_from_a_helper_is_exchanged_for_an_access_token(
    token_registry: tuple[Registry, TokenServer], helpers: Path, secret: str, code: int
) -> None:
    registry, server = token_registry
    helper(helpers / "bin", "identity",
           f'echo \'{{"Username": "<token>", "Secret": "{secret}"}}\'')
    server.requests.clear()
    config = auth_file(helpers / "auth.json", credHelpers={registry.host: "identity"})
    result = run_cli("--authfile", config, "--tls-verify=false", "--debug",
                     f"docker://{registry.host}/team/app:v1", helpers / "bundle")
    assert result.returncode == code, result.stderr
    assert server.requests[0]["grant"] == "refresh_token"
    assert secret not in result.stderr
    if code == 0:
        assert pulled(helpers / "bundle") == "mirror"
    else:
        assert "refused the credentials" in result.stderr
