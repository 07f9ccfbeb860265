"""Docker references: the grammar and normalisation of distribution/reference."""

from __future__ import annotations

import pytest

from unpack.source.archive import normalise_tag
from unpack.source.dockerref import InvalidReference, parse_named, parse_normalized

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("busybox", "docker.io/library/busybox"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox"),
    ("user/app", "docker.io/user/app"),
    ("index.docker.io/app", "docker.io/library/app"),
    ("docker.io/user/app", "docker.io/user/app"),
    ("localhost/app", "localhost/app"),
    ("localhost:5000/a/b", "localhost:5000/a/b"),
    ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
    ("[::1]:5000/app", "[::1]:5000/app"),
    ("quay.io/a/b/c", "quay.io/a/b/c"),
    ("Registry/app", "Registry/app"),  # an upper-case first component is a host
    (f"quay.io/a@{DIGEST}", f"quay.io/a@{DIGEST}"),
    (f"quay.io/a:t@{DIGEST}", f"quay.io/a:t@{DIGEST}"),
    ("a/b__c/d-e---f.g", "docker.io/a/b__c/d-e---f.g"),
])
def test_normalised(text: str, expected: str) -> None:
    assert str(parse_normalized(text)) == expected


@pytest.mark.parametrize("text", [
    "", "UPPER", "host/UPPER", "a//b", "a/", "/a", "a:", "a@sha256:abc", "a:tag with space",
    "ab" * 32, "a/b:" + "t" * 129, "a/" + "b" * 260, "host:port/a", "a/b_/c", "-a/b",
])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_normalized(text)


def test_parts_and_default_tag() -> None:
    reference = parse_normalized("quay.io/team/app")
    assert (reference.domain, reference.path, reference.name) == (
        "quay.io", "team/app", "quay.io/team/app")
    assert reference.name_only
    assert str(reference.with_default_tag()) == "quay.io/team/app:latest"
    digested = parse_normalized(f"quay.io/team/app@{DIGEST}")
    assert digested.with_default_tag() is digested and digested.digest == DIGEST


def test_parse_named_requires_the_normalised_form() -> None:
    assert str(parse_named("docker.io/library/busybox:1")) == "docker.io/library/busybox:1"
    for text in ("busybox:1", "docker.io/busybox", "index.docker.io/library/busybox"):
        with pytest.raises(InvalidReference):
            parse_named(text)


def test_docker_archive_tags_use_the_same_rule() -> None:
    assert normalise_tag("busybox") == "docker.io/library/busybox:latest"
    assert normalise_tag("localhost:5000/app:v2") == "localhost:5000/app:v2"
    assert normalise_tag("Registry/app") == "Registry/app:latest"
