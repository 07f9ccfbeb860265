"""The policy in the unpack and inspect verbs: what is fetched, what is written, what is said.

- the decision is made on the manifest, before the config or any layer is fetched;
- a rejected image leaves nothing at DIR, and nothing in `--cache` but documents;
- no policy anywhere: a warning and `"policy": null`; `--insecure-policy` skips it;
- the local transports have no signatures: a policy that wants one rejects them;
- cosign attachments are found through `use-sigstore-attachments` (and skopeo
  reads the test signer's attachments as containers/image expects them);
- a lookaside that hangs, serves garbage or a huge file is a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_tool, run_cli
from cosign import CosignKey, Pusher, sign
from registry import FaultyProxy, build_source_image, running_registry

from unpack import UnpackOptions, unpack_image
from unpack.errors import ImageError, NetworkError, PolicyRejected
from unpack.source import SourceOptions
from unpack.trust import policy as policy_module
from unpack.trust.decide import TrustOptions
from unpack.trust.signatures import signature_from_blob
from unpack.verbs.inspect import inspect_image

pytestmark = [needs_tool("skopeo"), needs_tool("docker-registry")]

ACCEPT = {"default": [{"type": "insecureAcceptAnything"}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("trust-unpack")
    build_source_image(directory / "layout")
    with running_registry(directory / "registry") as running:
        running.push(directory / "layout", "latest", "app/signed:v1")
        running.push(directory / "layout", "latest", "app/plain:v1")
        running.layout = directory / "layout"
        yield running


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def cosign_policy(directory: Path, key: CosignKey) -> Path:
    (directory / "cosign.pub").write_bytes(key.public_pem())
    requirement = {"type": "sigstoreSigned", "keyPath": str(directory / "cosign.pub")}
    return write(directory / "policy.json", {"default": [requirement]})


def registries_d(directory: Path, text: str) -> Path:
    folder = directory / "registries.d"
    folder.mkdir(exist_ok=True)
    (folder / "test.yaml").write_text(text)
    return folder


def digest_of(registry: Any, name: str) -> str:
    result = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format",
                             "{{.Digest}}", f"docker://{registry.host}/{name}"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip()


def unpack_api(image: str, dest: Path, trust: TrustOptions, **source: Any) -> Any:
    options = UnpackOptions(source=SourceOptions(tls_verify=False, **source), trust=trust)
    warnings: list[str] = []
    report = unpack_image(image, str(dest), options, warn=warnings.append)
    return report, warnings


def test_sigstore_attachments_end_to_end(registry: Any, tmp_path: Path) -> None:
    key, other = CosignKey.generate(), CosignKey.generate()
    name = "app/signed:v1"
    digest = digest_of(registry, name)
    sign(Pusher(registry.host), "app/signed", f"{registry.host}/{name}", digest, [other, key])
    folder = registries_d(tmp_path, "default-docker:\n  use-sigstore-attachments: true\n")
    policy = cosign_policy(tmp_path, key)
    trust = TrustOptions(policy=str(policy), registries_d=str(folder))
    report, _ = unpack_api(f"docker://{registry.host}/{name}", tmp_path / "bundle", trust)
    [accepted] = report.signature.signatures
    assert accepted["kind"] == "sigstore" and accepted["identity"] == f"{registry.host}/{name}"
    # without the registries.d opt-in, attachments are not read: no signature, rejected
    with pytest.raises(PolicyRejected, match="no signature"):
        unpack_api(f"docker://{registry.host}/{name}", tmp_path / "b2",
                   TrustOptions(policy=str(policy), registries_d=str(tmp_path / "none")))
    # skopeo (containers/image) reads the signer's attachments as cosign's: copied to dir:,
    # they are the same media type, payload and annotations
    accept = write(tmp_path / "accept.json", ACCEPT)
    copied = tmp_path / "dir"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--policy",
                    str(accept), "--registries.d", str(folder),
                    f"docker://{registry.host}/{name}", f"dir:{copied}"],
                   check=True, capture_output=True, timeout=120)
    stored = [signature_from_blob(p.read_bytes(), p.name)
              for p in sorted(copied.glob("signature-*"))]
    assert len(stored) == 2 and all(s.kind == "sigstore" for s in stored)
    assert {s.media_type for s in stored} == {"application/vnd.dev.cosign.simplesigning.v1+json"}
    inspected = inspect_image(f"docker://{registry.host}/{name}", None,
                              SourceOptions(tls_verify=False), trust)
    assert inspected.signature is not None and inspected.signature.accepted
    assert [s["kind"] for s in inspected.signature.found] == ["sigstore", "sigstore"]


def test_nothing_but_manifest_and_signatures_is_fetched(registry: Any, tmp_path: Path) -> None:
    policy = cosign_policy(tmp_path, CosignKey.generate())
    folder = registries_d(tmp_path, "default-docker:\n  use-sigstore-attachments: true\n")
    cache = tmp_path / "cache"
    with FaultyProxy(registry.host).running() as proxy:
        with pytest.raises(PolicyRejected):
            unpack_api(f"docker://{proxy.host}/app/plain:v1", tmp_path / "bundle",
                       TrustOptions(policy=str(policy), registries_d=str(folder)),
                       cache=str(cache))
        paths = [path for _, path, _ in proxy.requests]
    assert not [p for p in paths if "/blobs/" in p], paths  # no config, no layer
    assert any(p.endswith(".sig") for p in paths)  # the attachment was looked for
    assert not (tmp_path / "bundle").exists()
    cached = [p for p in (cache / "blobs").rglob("*") if p.is_file()]
    assert len(cached) <= 1  # the manifest document at most; never a layer


def test_no_policy_file_warns_and_reports_null(registry: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(policy_module, "SYSTEM_POLICY", str(tmp_path / "none.json"))
    report, warnings = unpack_api(f"docker://{registry.host}/app/plain:v1",
                                  tmp_path / "bundle", TrustOptions())
    assert report.signature.policy is None and report.signature.accepted is None
    assert len(warnings) == 1 and "no signature policy" in warnings[0]
    report, warnings = unpack_api(f"docker://{registry.host}/app/plain:v1", tmp_path / "b2",
                                  TrustOptions(insecure_policy=True))
    assert report.signature.policy is None and warnings == []


def test_insecure_policy_overrides_a_rejecting_policy(registry: Any, tmp_path: Path) -> None:
    reject = write(tmp_path / "reject.json", {"default": [{"type": "reject"}]})
    image = f"docker://{registry.host}/app/plain:v1"
    refused = run_cli("--tls-verify=false", "--policy", reject, image, tmp_path / "b1")
    assert refused.returncode == 6 and "rejects every image" in refused.stderr
    allowed = run_cli("--tls-verify=false", "--policy", reject, "--insecure-policy", "--json",
                      image, tmp_path / "b2")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["signature"]["policy"] is None


def test_local_transports_have_no_signatures(registry: Any, tmp_path: Path) -> None:
    layout = registry.layout
    wants_signature = write(tmp_path / "policy.json", {"default": [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent.gpg"}]})
    result = run_cli("--policy", wants_signature, f"oci:{layout}:latest", tmp_path / "bundle")
    assert result.returncode == 6 and "no signature" in result.stderr, result.stderr
    scoped = write(tmp_path / "scoped.json", {
        "default": [{"type": "reject"}],
        "transports": {"oci": {str(layout.resolve().parent): [
            {"type": "insecureAcceptAnything"}]}}})
    result = run_cli("--policy", scoped, "--json", f"oci:{layout}:latest", tmp_path / "b2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["signature"]["scope"] == \
        f'transports.oci."{layout.resolve().parent}"'


def test_inspect_reports_the_verdict(registry: Any, tmp_path: Path) -> None:
    reject = write(tmp_path / "reject.json", {"default": [{"type": "reject"}]})
    result = run_cli("inspect", "--tls-verify=false", "--policy", reject,
                     f"docker://{registry.host}/app/plain:v1")
    assert result.returncode == 0, result.stderr
    assert "rejects the image" in result.stdout and "Signatures   none found" in result.stdout
    as_json = run_cli("inspect", "--json", "--tls-verify=false", "--policy", reject,
                      f"docker://{registry.host}/app/plain:v1")
    signature = json.loads(as_json.stdout)["signature"]
    assert signature["accepted"] is False and signature["found"] == []


# -- a misbehaving lookaside -------------------------------------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()


def gpg_policy(tmp_path: Path) -> Path:
    key = tmp_path / "key.gpg"
    key.write_bytes(b"")  # never read: the lookaside fails first
    return write(tmp_path / "policy.json", {"default": [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}]})


def test_hanging_lookaside_is_a_clean_error(registry: Any, tmp_path: Path) -> None:
    with silent_server() as port:
        folder = registries_d(tmp_path, f"default-docker:\n  lookaside: http://127.0.0.1:{port}\n")
        trust = TrustOptions(policy=str(gpg_policy(tmp_path)), registries_d=str(folder))
        with pytest.raises(NetworkError, match=r"signature http://127\.0\.0\.1.*timed out"):
            unpack_api(f"docker://{registry.host}/app/plain:v1", tmp_path / "bundle", trust,
                       timeout=1.0)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(("content", "error"), [
    (b"\x7fELF garbage", "unrecognised signature format"),
    (b"\x00sigstore-json\nnot json", "invalid JSON"),
    (b"\x88" + b"x" * ((4 << 20) + 1), "larger than"),
], ids=["garbage", "bad-json", "too-large"])
def test_bad_lookaside_files(registry: Any, tmp_path: Path, content: bytes, error: str) -> None:
    lookaside = tmp_path / "sigs"
    digest = digest_of(registry, "app/plain:v1")
    folder = lookaside / f"app/plain@{digest.replace(':', '=')}"
    folder.mkdir(parents=True)
    (folder / "signature-1").write_bytes(content)
    config = registries_d(tmp_path, f"default-docker:\n  lookaside: file://{lookaside}\n")
    trust = TrustOptions(policy=str(gpg_policy(tmp_path)), registries_d=str(config))
    with pytest.raises(ImageError, match=error):
        unpack_api(f"docker://{registry.host}/app/plain:v1", tmp_path / "bundle", trust)
    result = run_cli("--tls-verify=false", "--policy", trust.policy, "--registries.d", config,
                     f"docker://{registry.host}/app/plain:v1", tmp_path / "bundle")
    assert result.returncode == 3 and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and not (tmp_path / "bundle").exists()
