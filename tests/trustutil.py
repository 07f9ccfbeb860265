"""Helpers for the trust tests: judge an image with a policy, and find containers/image's vectors.

containers/image's `signature/fixtures/` holds real signatures (simple signing
and cosign) with the verdicts its own tests give them. They are public test
data that this repository does not commit: the vector tests read them from
`$OCI_UNPACK_CIMAGE_FIXTURES`, or from a local snapshot of containers/image
(`/work/.mirror/containers+image/repo`, extracted with `git archive`), and
skip with that reason when neither is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unpack.source.dockerref import parse_normalized
from unpack.trust.decide import SignatureReport, evaluate
from unpack.trust.evaluation import PolicyImage
from unpack.trust.policy import parse_policy
from unpack.trust.signatures import Signature
from unpack.trust.subject import docker_subject

CIMAGE_SNAPSHOT = Path("/work/.mirror/containers+image/repo")
_extracted: Path | None = None


def judge(policy: dict[str, Any], reference: str, manifest: bytes,
          signatures: Sequence[Signature]) -> SignatureReport:
    """What `policy` says of a registry image `reference` with this manifest and signatures."""
    parsed = parse_policy(json.dumps(policy), "test-policy.json")
    subject = docker_subject(parse_normalized(reference))
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return evaluate(parsed, PolicyImage(subject, manifest, digest, lambda: list(signatures)))


def cimage_fixtures_or_skip() -> Path:
    """`cimage_fixtures()`, or skip the test saying where they would be taken from."""
    import pytest

    found = cimage_fixtures()
    if found is None:
        pytest.skip("containers/image's signature/fixtures are not here "
                    "(set OCI_UNPACK_CIMAGE_FIXTURES to a copy of them)")
    return found


def cimage_fixtures() -> Path | None:
    """containers/image's signature/fixtures directory, if it can be found here."""
    global _extracted
    explicit = os.environ.get("OCI_UNPACK_CIMAGE_FIXTURES")
    if explicit:
        return Path(explicit) if Path(explicit).is_dir() else None
    if _extracted is not None:
        return _extracted
    if not (CIMAGE_SNAPSHOT / "HEAD").exists():
        return None
    target = Path(tempfile.gettempdir()) / f"oci-unpack-cimage-fixtures-{os.getuid()}"
    if (target / "signature" / "fixtures").is_dir():
        _extracted = target / "signature" / "fixtures"
        return _extracted
    target.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "--git-dir", str(CIMAGE_SNAPSHOT), "archive", "HEAD", "signature/fixtures",
         "signature/internal/testdata"],
        capture_output=True, timeout=120,
    )
    if archive.returncode != 0:
        return None
    archive_path = target / "fixtures.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    _extracted = target / "signature" / "fixtures"
    return _extracted
