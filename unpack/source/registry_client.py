"""The HTTP side of a registry pull (OCI distribution spec): one client per repository.

The HTTP client is `requests` (on urllib3): connection pooling, redirects
(blob storage) that drop the Authorization header when they change host,
proxies from the environment, and raw streaming that lets a blob go
through verification and decompression without ever being stored.

- Manifests are `GET`/`HEAD /v2/NAME/manifests/REF`, sending Accept for the
  OCI and Docker manifest and index types.
- Each blob is `GET /v2/NAME/blobs/DIGEST`, streamed as it arrives;
  a dropped connection is resumed with `Range: bytes=N-` (a server that
  answers 200 instead of 206 is read from the start, skipping N bytes).
- Connection errors, 429 and 5xx are retried a bounded number of times.
- TLS trusts the system CAs plus the certs.d directory of the host (or
  --cert-dir), with its client certificate if there is one; with TLS
  verification off, plain HTTP is tried when HTTPS does not answer.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from unpack import __version__
from unpack.errors import ImageError, NetworkError, UsageError
from unpack.image import mediatypes
from unpack.image.descriptor import Descriptor
from unpack.image.documents import MAX_DOCUMENT_SIZE
from unpack.source.auth import Authorizer, Credentials, error_reason, find_credentials, parse_creds
from unpack.source.base import SourceOptions
from unpack.source.registryref import RegistryReference
from unpack.verify import Digest

CHUNK_SIZE = 1 << 20
MANIFEST_ACCEPT = ", ".join([
    mediatypes.OCI_INDEX,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_MANIFEST_LIST,
    mediatypes.DOCKER_MANIFEST,
])
CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF = 5.0
#: The media types a manifest GET or HEAD may answer with.
DOCUMENT_TYPES = mediatypes.MANIFESTS | mediatypes.INDEXES


def _tls_context(options: SourceOptions, host: str) -> ssl.SSLContext | None:
    """A context trusting the system CAs plus `*.crt` of the cert dir; with its client pair."""
    directories = [options.cert_dir] if options.cert_dir else [
        os.path.join(base, host) for base in CERTS_DIRS
    ]
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for directory in directories:
        if options.cert_dir and not os.path.isdir(directory):
            raise UsageError(f"--cert-dir {directory}: not a directory")
        cas += sorted(glob.glob(os.path.join(glob.escape(directory), "*.crt")))
        for cert in sorted(glob.glob(os.path.join(glob.escape(directory), "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if not os.path.exists(key):
                raise UsageError(f"client certificate {cert} has no {os.path.basename(key)}")
            pairs.append((cert, key))
    if not cas and not pairs:
        return None
    context = ssl.create_default_context()
    try:
        for ca in cas:
            context.load_verify_locations(cafile=ca)
        for cert, key in pairs:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"certificates in {directories[0]}: {error}") from None
    return context


class _ContextAdapter(HTTPAdapter):
    """Use our SSL context (extra CAs, client certificate) for verified HTTPS."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if verify is not False and host_params.get("scheme") == "https":
            pool_kwargs["ssl_context"] = self._context
        return host_params, pool_kwargs


class RegistryClient:
    """HTTP to one repository of one registry: auth, retries, scheme fallback."""

    def __init__(self, reference: RegistryReference, options: SourceOptions,
                 parent: RegistryClient | None = None) -> None:
        """`parent`: a client whose credentials, scheme and Authorization header this one
        starts with (a connection pool of its own for another thread, no new token)."""
        self.reference = reference
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"oci-unpack/{__version__}"
        self.session.verify = options.tls_verify
        if not options.tls_verify:  # asked for: no warning per request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.session.trust_env = True
        context = _tls_context(options, reference.api_host) if options.tls_verify else None
        if context is not None:
            self.session.mount("https://", _ContextAdapter(context))
        credentials: Credentials | None
        if parent is not None:
            credentials = parent.auth.credentials
        elif options.creds is not None:
            credentials = parse_creds(options.creds)
        else:
            credentials = find_credentials(
                reference.registry, reference.repository, options.authfile,
                options.helper_timeout,
            )
        self.auth = Authorizer(
            self.session, credentials, f"repository:{reference.repository}:pull", options.timeout,
            verify=options.tls_verify,
        )
        self._scheme: str | None = None
        self._streaming: requests.Response | None = None  # the blob being received, if any
        self._aborted = False
        #: A ranged request was answered with the whole blob (200): Range is not honoured.
        self.ranges_ignored = False
        if parent is not None:
            self._scheme, self.auth.header = parent._scheme, parent.auth.header
        #: How many HTTP requests were sent (token requests aside).
        self.requests_sent = 0

    def close(self) -> None:
        self.session.close()

    def abort(self) -> None:
        """From another thread: cut the connection a blob is received on, and send no
        more requests (a download that is no longer wanted ends now, not at its end)."""
        self._aborted = True
        response = self._streaming
        if response is None:
            return
        try:
            fd = response.raw.fileno()
        except (OSError, ValueError, AttributeError):  # it ended meanwhile (http.client
            return                                     # drops its file: AttributeError)
        with (contextlib.suppress(OSError),
              socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock):
            sock.shutdown(socket.SHUT_RDWR)  # the connection, whichever fd refers to it

    def url(self, kind: str, ref: str) -> str:
        return f"{self._base()}/v2/{self.reference.repository}/{kind}/{ref}"

    def _base(self) -> str:
        if self._scheme is None:
            self._scheme = self._pick_scheme()
        return f"{self._scheme}://{self.reference.api_host}"

    def _pick_scheme(self) -> str:
        """HTTPS; plain HTTP too when TLS verification is off (as skopeo does)."""
        if self.options.tls_verify:
            return "https"
        try:
            self._send("GET", f"https://{self.reference.api_host}/v2/", {}, ping=True).close()
            return "https"
        except NetworkError:
            return "http"

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, what: str = ""
    ) -> requests.Response:
        """Send with auth and bounded retries; the response is streamed (caller closes it)."""
        return self._send(method, url, headers or {}, what=what or url)

    def _send(
        self, method: str, url: str, headers: dict[str, str], what: str = "", ping: bool = False
    ) -> requests.Response:
        where = f"{self.reference.api_host}: {what or url}"
        attempts = 0
        auth_rounds = 0
        while True:
            if self._aborted:
                raise NetworkError(f"{where}: stopped")
            attempts += 1
            try:
                self.requests_sent += 1
                response = self.session.request(
                    method,
                    url,
                    headers={**headers, **self.auth.headers()},
                    stream=True,
                    timeout=(self.options.timeout, self.options.timeout),
                    allow_redirects=True,
                    verify=self.options.tls_verify,  # explicit: $REQUESTS_CA_BUNDLE wins over
                )                                    # the session's setting otherwise
            except requests.exceptions.SSLError as error:
                raise NetworkError(
                    f"{where}: TLS failure ({error_reason(error)}); give the registry's CA with "
                    "--cert-dir, or --tls-verify=false to skip verification"
                ) from None
            except requests.RequestException as error:
                if ping or attempts >= self.options.retries:
                    raise NetworkError(f"{where}: {error_reason(error)}") from None
                _backoff(attempts)
                continue
            if response.status_code == 401 and not ping and auth_rounds < 2:
                auth_rounds += 1
                response.close()
                self.auth.answer(response, where)
                continue
            if response.status_code in _RETRY_STATUS and attempts < self.options.retries:
                delay = _retry_after(response)
                response.close()
                _backoff(attempts, delay)
                continue
            return response

    def check(self, response: requests.Response, what: str, ok: tuple[int, ...]) -> None:
        """Raise the error an unexpected status means (the response is closed)."""
        if response.status_code in ok:
            return
        status = response.status_code
        detail = _error_detail(response)
        response.close()
        repository = f"docker://{self.reference.registry}/{self.reference.repository}"
        if status == 404:
            raise ImageError(f"{what}: not found in {repository} (404{detail})")
        if status in (401, 403):
            raise NetworkError(f"{repository}: {what}: access denied ({status}{detail})")
        raise NetworkError(f"{repository}: {what}: HTTP {status}{detail}")

    def fetch_document(
        self, kind: str, ref: str, what: str, accept: str | None,
        limit: int = MAX_DOCUMENT_SIZE,
    ) -> tuple[bytes, str, str | None]:
        """GET a manifest or small blob: (body, content type, Docker-Content-Digest)."""
        found = self.fetch_optional(kind, ref, what, accept, limit, missing_ok=False)
        assert found is not None
        return found

    def fetch_optional(
        self, kind: str, ref: str, what: str, accept: str | None,
        limit: int = MAX_DOCUMENT_SIZE, missing_ok: bool = True,
    ) -> tuple[bytes, str, str | None] | None:
        """`fetch_document`, or None when the registry answers 404 and `missing_ok`."""
        headers = {"Accept": accept} if accept else {}
        failures = 0
        while True:
            response = self.request("GET", self.url(kind, ref), headers, what)
            if missing_ok and response.status_code == 404:
                response.close()
                return None
            self.check(response, what, (200,))
            with response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > limit:
                    raise ImageError(f"{what}: {length} bytes is implausibly large")
                try:
                    body = response.raw.read(limit + 1, decode_content=True)
                except (urllib3.exceptions.HTTPError, OSError) as error:
                    failures += 1
                    if failures >= self.options.retries:
                        raise NetworkError(f"{what}: {error_reason(error)}") from None
                    _backoff(failures)
                    continue
                if len(body) > limit:
                    raise ImageError(f"{what}: larger than {limit} bytes")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                return body, content_type, response.headers.get("Docker-Content-Digest")

    def fetch_url(self, url: str, what: str, limit: int) -> bytes | None:
        """GET a URL off the registry API (a lookaside signature): no credentials are sent.

        None when the server answers 404 (the end of a signature list).
        """
        try:
            response = self.session.get(url, stream=True, allow_redirects=True,
                                        timeout=(self.options.timeout, self.options.timeout))
        except requests.RequestException as error:
            raise NetworkError(f"{what}: {error_reason(error)}") from None
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise NetworkError(f"{what}: HTTP {response.status_code}")
            try:
                body = response.raw.read(limit + 1, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise NetworkError(f"{what}: {error_reason(error)}") from None
        if len(body) > limit:
            raise ImageError(f"{what}: larger than {limit} bytes")
        return body

    def head_manifest(self, ref: str, what: str) -> tuple[Digest, str, int] | None:
        """HEAD a manifest: (digest, media type, size), or None if the answer lacks them."""
        response = self.request("HEAD", self.url("manifests", ref), {"Accept": MANIFEST_ACCEPT},
                                what)
        self.check(response, what, (200,))
        with response:
            digest = response.headers.get("Docker-Content-Digest")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            length = response.headers.get("Content-Length", "")
        if not digest or not length.isdigit() or content_type not in DOCUMENT_TYPES:
            return None
        return Digest.parse(digest), content_type, int(length)

    def blob_stream(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None,
        start: int = 0, end: int | None = None,
    ) -> Iterator[bytes]:
        """A blob's bytes from the network — all of them, or those in [start, end) — resumed
        with Range after a dropped connection. A server that ignores Range is read from the
        start (`ranges_ignored` then says so)."""
        what = f"blob {descriptor.digest}"
        url = self.url("blobs", str(descriptor.digest))
        stop = descriptor.size if end is None else end
        received = start
        failures = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if received or end is not None:
                headers["Range"] = f"bytes={received}-{stop - 1}" if end is not None \
                    else f"bytes={received}-"
            response = self.request("GET", url, headers, what)
            self.check(response, what, (200, 206) if "Range" in headers else (200,))
            skip = received if response.status_code == 200 else 0
            if skip:
                self.ranges_ignored = True
            if response.status_code == 206 and not _range_starts_at(response, received):
                response.close()
                raise NetworkError(f"{what}: the server answered a different range than asked")
            self._streaming = response
            try:
                if self._aborted:
                    raise NetworkError(f"{what}: stopped")
                with response:
                    for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk, skip = chunk[dropped:], skip - dropped
                            if not chunk:
                                continue
                        if end is not None and received + len(chunk) >= stop:
                            chunk = chunk[: stop - received]
                        received += len(chunk)
                        if observe is not None:
                            observe(len(chunk))
                        yield chunk
                        if end is not None and received >= stop:
                            return
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
                failures += 1
                if failures >= self.options.retries:
                    raise NetworkError(
                        f"{what}: connection lost after {received - start} bytes, {failures} "
                        f"times ({error_reason(error)})"
                    ) from None
                _backoff(failures)
                continue
            finally:
                self._streaming = None
            if received >= stop or skip:
                return  # complete (verified() judges), or shorter than the skip: let it fail
            failures += 1  # the body ended early without an error: resume
            if failures >= self.options.retries:
                return


def _range_starts_at(response: requests.Response, start: int) -> bool:
    value = response.headers.get("Content-Range", "")
    return value.startswith(f"bytes {start}-")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), _MAX_BACKOFF) if value.isdigit() else None


def _backoff(attempt: int, delay: float | None = None) -> None:
    time.sleep(delay if delay is not None else min(0.1 * 2 ** (attempt - 1), _MAX_BACKOFF))


def _error_detail(response: requests.Response) -> str:
    """`: CODE message` from a distribution-spec error body, if there is one."""
    try:
        body = json.loads(response.raw.read(1 << 16, decode_content=True))
        error = body["errors"][0]
        return f": {error.get('code', '')} {error.get('message', '')}".rstrip()
    except Exception:
        return ""
