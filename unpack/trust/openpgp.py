"""OpenPGP key files as the policy names them: armored or binary, one key or several.

Only what the policy needs before a signature is checked: undo the ASCII
armor (RFC 4880 §6) and list the primary keys' fingerprints, so that a key
file holding no public key is reported as such. Signatures themselves are
verified by GnuPG's `gpgv` (`unpack.trust.gpg`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

_ARMOR = re.compile(
    rb"-----BEGIN PGP ([A-Z ,0-9/]+)-----\r?\n(.*?)-----END PGP \1-----", re.DOTALL
)
_PUBLIC_KEY = 6


class KeyFileError(ValueError):
    """A key file is not OpenPGP key material."""


def dearmor(data: bytes) -> bytes:
    """Binary packets of `data`, undoing ASCII armor when there is some (every block)."""
    if b"-----BEGIN PGP" not in data:
        return data
    blocks = []
    for match in _ARMOR.finditer(data):
        headers_and_body = match.group(2).replace(b"\r\n", b"\n")
        _, blank, body = headers_and_body.partition(b"\n\n")
        if not blank:  # no armor headers: the body starts at once
            body = headers_and_body
        lines = [line.strip() for line in body.split(b"\n") if line.strip()]
        lines = [line for line in lines if not line.startswith(b"=")]  # the CRC-24 line
        try:
            blocks.append(base64.b64decode(b"".join(lines), validate=True))
        except (binascii.Error, ValueError):
            raise KeyFileError("ASCII armor with invalid base64") from None
    if not blocks:
        raise KeyFileError("ASCII armor without an END line")
    return b"".join(blocks)


def primary_fingerprints(packets: bytes) -> list[str]:
    """Upper-case hex fingerprints of the primary public keys (v4: SHA-1; v5/v6: SHA-256)."""
    fingerprints = []
    for tag, body in _packets(packets):
        if tag == _PUBLIC_KEY and body:
            fingerprints.append(_fingerprint(body))
    return fingerprints


def _fingerprint(body: bytes) -> str:
    version = body[0]
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    prefix = b"\x9a" if version == 5 else b"\x9b"
    return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of each packet; raise KeyFileError on anything that is not a packet."""
    packets, offset = [], 0
    while offset < len(data):
        first = data[offset]
        if not first & 0x80:
            raise KeyFileError(f"not an OpenPGP packet at byte {offset}")
        if first & 0x40:  # new format
            tag = first & 0x3F
            length, header = _new_length(data, offset + 1)
        else:
            tag = (first >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(first & 3)
            if size is None:  # indeterminate: to the end
                length, header = len(data) - offset - 1, 1
            else:
                length = int.from_bytes(data[offset + 1 : offset + 1 + size], "big")
                header = 1 + size
        start = offset + header
        if start + length > len(data):
            raise KeyFileError(f"truncated OpenPGP packet at byte {offset}")
        packets.append((tag, data[start : start + length]))
        offset = start + length
    return packets


def _new_length(data: bytes, at: int) -> tuple[int, int]:
    """(body length, header length including the tag octet) of a new-format packet."""
    if at >= len(data):
        raise KeyFileError("truncated OpenPGP packet header")
    octet = data[at]
    if octet < 192:
        return octet, 2
    if octet < 224 and at + 1 < len(data):
        return ((octet - 192) << 8) + data[at + 1] + 192, 3
    if octet == 255 and at + 4 < len(data):
        return int.from_bytes(data[at + 1 : at + 5], "big"), 6
    raise KeyFileError("partial-length or truncated packet in a key file")
