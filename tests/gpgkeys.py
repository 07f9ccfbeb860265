"""Throwaway OpenPGP keys for the tests: a GnuPG home in a temporary directory.

Keys are generated at test time (ed25519, no passphrase); nothing is committed.
`faked_time` runs gpg at another time (to make expired keys and signatures).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class GpgHome:
    """A GNUPGHOME of its own; `env` is what gpg and skopeo need to use it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = {**os.environ, "GNUPGHOME": str(directory)}

    def gpg(self, *args: str, faked_time: str | None = None, stdin: bytes = b"") -> bytes:
        command = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback",
                   "--passphrase", ""]
        if faked_time:
            command += ["--faked-system-time", faked_time, "--ignore-time-conflict"]
        result = subprocess.run([*command, *args], input=stdin, capture_output=True,
                                env=self.env, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"gpg {args}: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def generate(self, name: str, expire: str = "never", faked_time: str | None = None,
                 signing_subkey: bool = False) -> str:
        """A new ed25519 key (certify+sign); its fingerprint."""
        usage = "cert" if signing_subkey else "cert,sign"
        self.gpg("--quick-gen-key", f"{name} <{name}@example.test>", "ed25519", usage, expire,
                 faked_time=faked_time)
        fingerprint = self.fingerprints(name)[0]
        if signing_subkey:
            self.gpg("--quick-add-key", fingerprint, "ed25519", "sign", "never")
        return fingerprint

    def fingerprints(self, name: str) -> list[str]:
        """[primary, subkeys…] fingerprints of the key named `name`."""
        listing = self.gpg("--with-colons", "--list-keys", f"<{name}@example.test>").decode()
        return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]

    def export(self, fingerprint: str, armor: bool = False) -> bytes:
        return self.gpg(*(["--armor"] if armor else []), "--export", fingerprint)

    def sign(self, data: bytes, key: str, faked_time: str | None = None,
             expire: str | None = None) -> bytes:
        """An opaque (non-detached) binary signature of `data`, as simple signing makes."""
        extra = ["--default-sig-expire", expire] if expire else []
        return self.gpg("--local-user", key, *extra, "--sign", "--output", "-",
                        faked_time=faked_time, stdin=data)

    def revoke_subkey(self, fingerprint: str) -> None:
        """Revoke the first subkey of the key."""
        commands = "key 1\nrevkey\ny\n0\n\ny\nsave\n"
        self.gpg("--command-fd", "0", "--edit-key", fingerprint, stdin=commands.encode())
