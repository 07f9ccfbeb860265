"""Test helpers for the sources: TLS, a token server, and the test image.

The registry and the proxy in front of it live in `fixtures/registry.py` (the
benchmark uses them too) and are re-exported here:

- `Registry`, `running_registry`: Debian's `docker-registry` on 127.0.0.1; with
  `make_ca`'s certificates, an htpasswd file, or `TokenServer` tokens here;
- `make_ca`: a self-signed CA and a server certificate for 127.0.0.1;
- `TokenServer`: a small Docker token server (RS256 JWTs with an x5c chain);
- `FaultyProxy` (= `RegistryProxy`): a proxy that can be slow or misbehave on blobs;
- `build_source_image`, `tree`: the test image, and a comparable view of a bundle.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fixtures.layout import LayoutWriter
from fixtures.registry import (  # noqa: F401 (re-exported for the tests)
    REGISTRY_BINARY,
    QuietHandler,
    Registry,
    RegistryProxy,
    free_port,
    running_registry,
    serving,
)
from fixtures.tarwriter import build_tar, dirent, hardlink, opaque, reg, symlink, whiteout

USER, PASSWORD = "tester", "s3cret:with-colon"


# ------------------------------------------------------------------ the test image
def noise(size: int, seed: bytes) -> bytes:
    """Incompressible deterministic bytes (so a layer blob is big enough to cut)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


BIG_SIZE = 3 << 20


def build_source_image(path: Path, tag: str = "latest") -> None:
    """Three layers (gzip, plain, gzip): files, modes, owners, links, whiteouts, opaque dirs."""
    out = LayoutWriter(path)
    base = build_tar([
        dirent("etc"), reg("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        reg("etc/hostname", b"source-test\n", mode=0o600),
        dirent("data"), reg("data/big.bin", noise(BIG_SIZE, b"big"), mode=0o640),
        reg("data/owned", b"alice's\n", uid=1001, gid=1001),
        symlink("data/link", "big.bin"), hardlink("data/hard", "data/owned"),
        dirent("srv"), dirent("srv/old"), reg("srv/old/gone.txt", b"gone\n"),
        reg("remove-me", b"bye\n"), dirent("tmp", mode=0o1777),
    ])
    middle = build_tar([
        whiteout("remove-me"), reg("etc/motd", b"layer two\n", mode=0o644),
        reg("data/suid", b"#!/bin/sh\n", mode=0o4755),
    ])
    top = build_tar([opaque("srv/old"), reg("srv/old/new.txt", b"new\n")])
    layers = [out.add_layer(base, "gzip"), out.add_layer(middle, "none"),
              out.add_layer(top, "gzip")]
    config = {"config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
                         "Env": ["PATH=/bin", "A=1"], "User": "0:0", "WorkingDir": "/srv",
                         "Labels": {"test": "sources"}}}
    out.tag(out.add_image(layers, config), tag)
    out.write()


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every name under `root`: type, mode, owner, size, content digest or link target.

    Hard links show as the sorted group of names sharing an inode.
    """
    entries: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for directory, names, files in os.walk(root):
        for name in sorted(names + files):
            path = Path(directory) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            kind = st.st_mode & 0o170000
            extra: Any = None
            if kind == 0o100000:
                extra = hashlib.sha256(path.read_bytes()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif kind == 0o120000:
                extra = os.readlink(path)
            size = st.st_size if kind != 0o040000 else 0
            entries[rel] = (kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, size, extra)
    for group in inodes.values():
        if len(group) > 1:
            for rel in group:
                entries[rel] = (*entries[rel], tuple(sorted(group)))
    return entries


# ------------------------------------------------------------------ TLS
@dataclass(frozen=True)
class Certs:
    """A CA (`ca.crt` in `cert_dir`) and a server certificate signed by it."""

    cert_dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_ca(directory: Path) -> Certs:
    """A self-signed CA and a certificate for 127.0.0.1/localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oci-unpack test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_dir = directory / "certs"
    cert_dir.mkdir(parents=True)
    ca_path = cert_dir / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert = directory / "server.pem"
    server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_key = directory / "server-key.pem"
    server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return Certs(cert_dir, ca_path, server_cert, server_key)


# ------------------------------------------------------------------ small HTTP servers
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token server: `GET /token?service=S&scope=repository:NAME:ACTIONS`.

    Valid basic credentials get every action asked for; anonymous callers get
    `pull` only if `anonymous_pull`, else 401. `POST /token` takes the OAuth2
    refresh-token grant (an identity token): REFRESH_TOKEN is USER's. Tokens are
    RS256 JWTs whose x5c header holds the signing certificate, which the registry
    trusts.
    """

    def __init__(self, directory: Path, anonymous_pull: bool = False) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.service = "oci-unpack-test"
        self.issuer = "oci-unpack-test-issuer"
        self.anonymous_pull = anonymous_pull
        self.requests: list[dict[str, Any]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.bundle = directory / "token-signer.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = 0

    def token(self, subject: str, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for item in scope.split(" ") if scope else []:
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = actions.split(",") if subject else ["pull"]
            access.append({"type": kind, "name": name,
                           "actions": [a for a in allowed if a in actions.split(",")]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    @contextlib.contextmanager
    def running(self) -> Iterator[TokenServer]:
        with serving(_TokenHandler, self) as port:
            self.port = port
            yield self

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"


REFRESH_TOKEN = "identity-token-of-tester"


class _TokenHandler(QuietHandler):
    def do_POST(self) -> None:
        owner: TokenServer = self.server.owner
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        scope = " ".join(form.get("scope", []))
        granted = form.get("grant_type") == ["refresh_token"] and \
            form.get("refresh_token") == [REFRESH_TOKEN]
        owner.requests.append({"scope": scope, "user": USER if granted else None,
                               "granted": granted, "grant": "refresh_token"})
        if not granted:
            self._reply(401, {"details": "bad refresh token"})
            return
        token = owner.token(USER, scope)
        self._reply(200, {"access_token": token, "expires_in": 300})

    def do_GET(self) -> None:
        owner: TokenServer = self.server.owner
        query = parse_qs(urlsplit(self.path).query)
        scope = " ".join(query.get("scope", []))
        subject = ""
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                self._reply(401, {"details": "bad credentials"})
                owner.requests.append({"scope": scope, "user": user, "granted": False})
                return
            subject = user
        elif not owner.anonymous_pull:
            self._reply(401, {"details": "anonymous access refused"})
            owner.requests.append({"scope": scope, "user": None, "granted": False})
            return
        owner.requests.append({"scope": scope, "user": subject or None, "granted": True})
        token = owner.token(subject, scope)
        self._reply(200, {"token": token, "access_token": token, "expires_in": 300})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ------------------------------------------------------------------ the registry
def htpasswd_file(directory: Path) -> Path:
    """An htpasswd file (bcrypt, as the registry requires) for USER/PASSWORD."""
    line = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    path = directory / "htpasswd"
    path.write_text(line + "\n")
    return path


#: The faulty proxy of the source tests is the registry proxy (fixtures/registry.py).
FaultyProxy = RegistryProxy
