"""Validation against the runtime-spec JSON schema, for the config converter's tests.

The schema is the one the Debian package golang-github-opencontainers-specs-dev installs
(``OCI_RUNTIME_SCHEMA_DIR`` may point elsewhere). Its files ``$ref`` their siblings by
relative name, so each is registered under its file name.
"""

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMA_DIR = Path(
    os.environ.get(
        "OCI_RUNTIME_SCHEMA_DIR",
        "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema",
    )
)
ROOT_SCHEMA = "config-schema.json"


@functools.cache
def validator() -> Draft4Validator | None:
    """The config-schema.json validator, or None when the schema is not installed."""
    if not (SCHEMA_DIR / ROOT_SCHEMA).is_file():
        return None
    resources = [
        (path.name, Resource.from_contents(json.loads(path.read_text()), DRAFT4))
        for path in SCHEMA_DIR.glob("*.json")
    ]
    registry = Registry().with_resources(resources)
    schema = registry[ROOT_SCHEMA].contents
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema, registry=registry)


def require_validator() -> Draft4Validator:
    """The validator, or skip the calling test with the reason it is missing."""
    found = validator()
    if found is None:
        pytest.skip(
            f"runtime-spec schema not found at {SCHEMA_DIR} "
            "(install golang-github-opencontainers-specs-dev or set OCI_RUNTIME_SCHEMA_DIR)"
        )
    return found


def check(config: Any) -> None:
    """Assert ``config`` is JSON-serialisable and, when the schema is installed, valid."""
    assert json.loads(json.dumps(config)) == config
    found = validator()
    if found is not None:
        found.validate(config)
