"""Verify simple-signing signatures with GnuPG's `gpgv`, in a throwaway home.

Why `gpgv` (and not a Python OpenPGP library, nor the full `gpg`): it is the
same OpenPGP engine skopeo and podman reach through GPGME, so a signature is
judged exactly as they judge it (expiry, revocation, subkeys); and it is the
smallest part of GnuPG — it only verifies, trusts exactly the keyrings it is
given, never imports, decrypts, fetches keys or talks to an agent. The
untrusted signature is handled by a short-lived process with an empty home,
a time limit and a cap on the content it may output.

A signature is accepted when gpgv reports exactly one signature, good
(GOODSIG) and valid (VALIDSIG), by a key of the keyring: not expired, not by
an expired or revoked key, not bad, not by an unknown key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from unpack.trust.openpgp import KeyFileError, dearmor, primary_fingerprints
from unpack.trust.signatures import MAX_SIGNATURE_SIZE

GPGV_TIMEOUT = 30.0
_REJECTIONS = {
    "BADSIG": "bad signature (the content does not match it)",
    "EXPSIG": "the signature has expired",
    "EXPKEYSIG": "made by an expired key",
    "REVKEYSIG": "made by a revoked key",
}


class GpgUnavailable(RuntimeError):
    """`gpgv` is not installed."""


class SignatureRejected(ValueError):
    """The signature does not verify; the message says why."""


@dataclass(frozen=True)
class Verified:
    """A verified simple signature: its content and who signed it."""

    content: bytes
    fingerprint: str  # the primary key's
    signing_key: str  # the key (or subkey) that made the signature


class Keyring:
    """The trusted public keys of one `signedBy` requirement."""

    def __init__(self, key_blobs: list[tuple[str, bytes]]) -> None:
        """`key_blobs`: (where, data) for each key file or keyData; armored or binary."""
        self.packets = b""
        self.fingerprints: list[str] = []
        for where, data in key_blobs:
            try:
                packets = dearmor(data)
                found = primary_fingerprints(packets)
            except KeyFileError as error:
                raise KeyFileError(f"{where}: {error}") from None
            self.packets += packets
            self.fingerprints += found

    def verify(self, signature: bytes) -> Verified:
        """Check `signature` against this keyring; raise SignatureRejected with the reason."""
        gpgv = shutil.which("gpgv")
        if gpgv is None:
            raise GpgUnavailable("gpgv (GnuPG) is needed to verify signedBy signatures")
        with tempfile.TemporaryDirectory(prefix="oci-unpack-gpgv-") as home:
            keyring = os.path.join(home, "trusted.gpg")
            signed = os.path.join(home, "signature")
            status_path = os.path.join(home, "status")
            for path, data in ((keyring, self.packets), (signed, signature)):
                with open(path, "wb") as file:
                    file.write(data)
            with open(status_path, "wb") as status:
                content, returncode = _run(
                    [gpgv, "--homedir", home, "--keyring", keyring,
                     "--status-fd", str(status.fileno()), "--output", "-", signed],
                    status.fileno(),
                )
            with open(status_path, "rb") as status:
                lines = status.read().decode("utf-8", "replace").splitlines()
        return _judge(lines, returncode, content)


def _run(command: list[str], status_fd: int) -> tuple[bytes, int]:
    """Run gpgv; its stdout (the signed content) is capped and the run is timed."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, pass_fds=(status_fd,), env=env,
    )
    try:
        assert process.stdout is not None
        content = process.stdout.read(MAX_SIGNATURE_SIZE + 1)
        if len(content) > MAX_SIGNATURE_SIZE:
            raise SignatureRejected(f"signed content larger than {MAX_SIGNATURE_SIZE} bytes")
        return content, process.wait(timeout=GPGV_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SignatureRejected(f"gpgv took longer than {GPGV_TIMEOUT:.0f} s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _judge(lines: list[str], returncode: int, content: bytes) -> Verified:
    """Read gpgv's status lines: exactly one good, valid signature by a keyring key."""
    words = [line.split() for line in lines if line.startswith("[GNUPG:] ")]
    keywords = [w[1] for w in words if len(w) > 1]
    if keywords.count("NEWSIG") > 1:
        raise SignatureRejected(f"{keywords.count('NEWSIG')} signatures in one blob")
    for keyword, reason in _REJECTIONS.items():
        if keyword in keywords:
            raise SignatureRejected(reason)
    errsig = next((w for w in words if w[1] == "ERRSIG"), None)
    if errsig is not None:
        key = errsig[2] if len(errsig) > 2 else "?"
        if "NO_PUBKEY" in keywords:
            raise SignatureRejected(f"signed by an untrusted key ({key})")
        raise SignatureRejected(f"cannot check the signature by key {key}")
    valid = next((w for w in words if w[1] == "VALIDSIG"), None)
    if returncode != 0 or "GOODSIG" not in keywords or valid is None:
        if "NODATA" in keywords or "UNEXPECTED" in keywords or not keywords:
            raise SignatureRejected("not an OpenPGP signature")
        raise SignatureRejected("no valid signature")
    signing_key = valid[2]
    primary = valid[11] if len(valid) > 11 else signing_key
    return Verified(content, primary, signing_key)
