"""Strict JSON objects, as containers/image reads policies and signature payloads.

A security policy or a signed payload must not be read loosely: a duplicated
key, an unknown key or a value of the wrong type is an error, never skipped
(containers/image's `ParanoidUnmarshalJSONObject`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any


class StrictJSONError(ValueError):
    """The document is not what the strict reading expects; the message says where."""


def load(data: bytes | str, what: str) -> Any:
    """Decode JSON, refusing duplicated keys at any depth."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise StrictJSONError(f"{what}: duplicate key {key!r}")
            result[key] = value
        return result

    try:
        return json.loads(data, object_pairs_hook=no_duplicates)
    except StrictJSONError:
        raise
    except (ValueError, RecursionError) as error:
        raise StrictJSONError(f"{what}: invalid JSON ({error})") from None


def obj(value: Any, what: str, required: Iterable[str] = (),
        optional: Iterable[str] = ()) -> dict[str, Any]:
    """`value` as a JSON object with exactly the `required` keys and any of the `optional` ones."""
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what}: expected a JSON object")
    required = tuple(required)
    allowed = set(required) | set(optional)
    for key in value:
        if key not in allowed:
            raise StrictJSONError(f"{what}: unknown key {key!r}")
    for key in required:
        if key not in value:
            raise StrictJSONError(f"{what}: key {key!r} is missing")
    return value


def string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StrictJSONError(f"{what}: expected a string")
    return value


def strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise StrictJSONError(f"{what}: expected a list of strings")
    return tuple(string(item, f"{what}[{i}]") for i, item in enumerate(value))


def base64_bytes(value: Any, what: str) -> bytes:
    """A `[]byte` field: standard base64 with padding (line breaks ignored, as Go does)."""
    text = string(value, what).replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise StrictJSONError(f"{what}: not valid base64") from None


def base64_list(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise StrictJSONError(f"{what}: expected a list of base64 strings")
    return tuple(base64_bytes(item, f"{what}[{i}]") for i, item in enumerate(value))


def integer(value: Any, what: str) -> int:
    """A JSON number with no fractional part (`1.0` counts, as Go's float → int64 check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StrictJSONError(f"{what}: expected an integer")
    if isinstance(value, float) and not value.is_integer():
        raise StrictJSONError(f"{what}: not an integer")
    return int(value)
