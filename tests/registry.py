"""Test helpers for the sources: a real registry, TLS, a token server, a faulty proxy.

Everything listens on 127.0.0.1 only, is bounded in time, and is stopped by
the fixtures that start it (context managers here).

- `Registry`: Debian's `docker-registry` (distribution v2) with a generated
  config on a free port; plain HTTP, htpasswd basic auth over TLS, or
  bearer tokens from `TokenServer`.
- `make_ca`: a self-signed CA and a server certificate for 127.0.0.1.
- `TokenServer`: a small Docker token server (RS256 JWTs with an x5c chain).
- `FaultyProxy`: an HTTP reverse proxy that can drop a blob mid-way, redirect
  blobs to another host name, or corrupt them; it counts the requests.
- `build_source_image`, `tree`: the test image, and a comparable view of a bundle.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, dirent, hardlink, opaque, reg, symlink, whiteout

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 15.0
USER, PASSWORD = "tester", "s3cret:with-colon"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ the test image
def _noise(size: int, seed: bytes) -> bytes:
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
        dirent("data"), reg("data/big.bin", _noise(BIG_SIZE, b"big"), mode=0o640),
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
class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: Any


@contextlib.contextmanager
def _serving(handler: type[_QuietHandler], owner: Any) -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), handler)
    server.owner = owner
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token server: `GET /token?service=S&scope=repository:NAME:ACTIONS`.

    Valid basic credentials get every action asked for; anonymous callers get
    `pull` only if `anonymous_pull`, else 401. Tokens are RS256 JWTs whose
    x5c header holds the signing certificate, which the registry trusts.
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
        with _serving(_TokenHandler, self) as port:
            self.port = port
            yield self

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"


class _TokenHandler(_QuietHandler):
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
@dataclass
class Registry:
    """A running `docker-registry`; `host` is `127.0.0.1:PORT`."""

    directory: Path
    certs: Certs | None = None
    htpasswd: Path | None = None
    token: TokenServer | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "oci-unpack-test-secret"},
        }
        if self.certs is not None:
            config["http"]["tls"] = {"certificate": str(self.certs.server_cert),
                                     "key": str(self.certs.server_key)}
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "test-realm", "path": str(self.htpasswd)}}
        elif self.token is not None:
            config["auth"] = {"token": {
                "realm": self.token.realm, "service": self.token.service,
                "issuer": self.token.issuer, "rootcertbundle": str(self.token.bundle),
            }}
        return json.dumps(config)  # YAML is a superset of JSON

    def start(self) -> None:
        self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(self._config())
        log = open(self.directory / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not start listening in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        path = self.directory / "registry.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def push(self, layout: Path, tag: str, name: str, *, all_images: bool = False,
             creds: str | None = None) -> None:
        """`skopeo copy oci:LAYOUT:TAG docker://HOST/NAME` (with --all for an index)."""
        command = ["skopeo", "copy", "--quiet", "--retry-times", "2"]
        if all_images:
            command.append("--all")
        command += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        if self.certs is not None:
            command.append(f"--dest-cert-dir={self.certs.cert_dir}")
        else:
            command.append("--dest-tls-verify=false")
        if creds is not None:
            command.append(f"--dest-creds={creds}")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "REGISTRY_AUTH_FILE": "/nonexistent"})
        if result.returncode != 0:
            raise RuntimeError(f"skopeo push failed: {result.stderr}\n{self.log()}")


@contextlib.contextmanager
def running_registry(directory: Path, **kwargs: Any) -> Iterator[Registry]:
    """Start a registry; stop it (and remove its storage) on the way out."""
    registry = Registry(directory, **kwargs)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(directory / "storage", ignore_errors=True)


def htpasswd_file(directory: Path) -> Path:
    """An htpasswd file (bcrypt, as the registry requires) for USER/PASSWORD."""
    line = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    path = directory / "htpasswd"
    path.write_text(line + "\n")
    return path


# ------------------------------------------------------------------ the faulty proxy
@dataclass
class FaultyProxy:
    """A reverse proxy to a plain-HTTP registry that can misbehave on blob GETs.

    - `drop_after`: send this many body bytes of the first GET of each blob
      (the full Content-Length announced), then cut the connection;
    - `redirect`: answer blob GETs with a 307 to the same proxy under the
      host name `localhost` (another host, as blob storage is);
    - `corrupt`: flip one byte in the middle of every blob body;
    - `ignore_range`: forward no Range header (the registry answers 200, whole);
    - `unavailable`: answer the first N requests 503 Service Unavailable.
    `requests` records (method, path, Range header) of everything received.
    """

    upstream: str
    drop_after: int | None = None
    redirect: bool = False
    corrupt: bool = False
    ignore_range: bool = False
    unavailable: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultyProxy]:
        with _serving(_ProxyHandler, self) as port:
            self.port = port
            yield self

    def blob_gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and "/blobs/" in r[1]]


class _ProxyHandler(_QuietHandler):
    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def do_GET(self) -> None:
        self._forward("GET")

    def _forward(self, method: str) -> None:
        proxy: FaultyProxy = self.server.owner
        path = self.path
        proxy.requests.append((method, path, self.headers.get("Range")))
        if len(proxy.requests) <= proxy.unavailable:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        is_blob = method == "GET" and "/blobs/" in path
        redirected = path.startswith("/_storage")
        if is_blob and proxy.redirect and not redirected:
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{proxy.port}/_storage{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if redirected:
            path = path[len("/_storage"):]
        forwarded = ("accept", "authorization", "accept-encoding",
                     *(() if proxy.ignore_range else ("range",)))
        headers = {k: v for k, v in self.headers.items() if k.lower() in forwarded}
        connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
        try:
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            body = response.read() if method == "GET" else b""
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "keep-alive",
                                       "content-length"):
                    self.send_header(key, value)
            length = response.getheader("Content-Length") or str(len(body))
            self.send_header("Content-Length", length)
            if is_blob and response.status in (200, 206):
                if proxy.corrupt and body:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                blob = path.rsplit("/", 1)[-1]
                if proxy.drop_after is not None and blob not in proxy.dropped:
                    proxy.dropped.add(blob)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body[: proxy.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self.end_headers()
            self.wfile.write(body)
        finally:
            connection.close()
