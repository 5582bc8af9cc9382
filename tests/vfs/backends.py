"""The backends under test: one registry the conformance suite, the copy matrix and the failure
tests take their parameters from.

A backend joins by adding a session-scoped fixture that returns a :class:`TargetFactory` (each
``new()`` is an empty VFS of its own on the backend's session server: a fresh directory, prefix
or container) and one line to :data:`BACKENDS`; a backend that takes part in the copy matrix
also adds its id to :data:`MATRIX`. The fixture module is imported by ``tests/vfs/conftest.py``.

What the tests ask of a :class:`BackendTarget` beyond its ``[vfs.NAME]`` entry: the server to
kill and restart (crash tests), what a failed upload could leave outside the VFS's view
(incomplete multipart uploads), a wrong credential, a container that does not exist, and where
the files are on this machine for tests that plant symlinks or FIFOs (local and SFTP only).
"""

from __future__ import annotations

import base64
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.fixtures.azurite import AzuriteServer
from tests.fixtures.ftp import FtpServer
from tests.fixtures.gcs import GcsServer
from tests.fixtures.s3 import S3Server
from tests.fixtures.sshd import SshdServer, start_sshd

__all__ = ["BACKENDS", "MATRIX", "ON_DISK", "BackendTarget", "Restartable", "TargetFactory"]

# backend id -> name of the fixture returning its TargetFactory
BACKENDS: dict[str, str] = {
    "local": "local_backend",
    "sftp": "sftp_backend",
    "ftps": "vsftpd_backend",
    "ftps-pyftpdlib": "pyftpdlib_backend",
    "s3": "seaweedfs_backend",
    "s3-rclone": "rclone_s3_backend",
    "azure": "azurite_backend",
    "gcs": "fake_gcs_backend",
}
# The copy matrix runs every ordered pair of these (one per backend type).
MATRIX: list[str] = ["local", "sftp", "ftps", "s3", "azure", "gcs"]
# Backends whose files are on this machine (tests that plant symlinks and FIFOs).
ON_DISK: list[str] = ["local", "sftp", "ftps", "ftps-pyftpdlib"]


class Restartable(Protocol):
    def kill(self) -> None: ...
    def start(self) -> None: ...


async def _nothing() -> list[str]:
    return []


@dataclass
class BackendTarget:
    """One empty VFS on a backend, and what the tests need to know about it."""

    id: str
    entry: dict[str, Any]  # the [vfs.NAME] keys
    secrets: dict[str, str]  # secret name -> value, for the entry
    server: Restartable | None = None  # kill() + start() for crash tests; None: no server
    local_dir: Path | None = None  # where its files are on this machine (local, SFTP)
    # Refuses backslashes and percent-encoded separators in paths (object stores, FTP).
    strict_names: bool = False
    # What a failed or cancelled upload could leave that the VFS does not list: must be [].
    leftovers: Callable[[], Awaitable[list[str]]] = field(default=_nothing)
    # Secrets with one credential wrong, and that wrong value (it must never be shown).
    bad_secrets: dict[str, str] | None = None
    bad_value: str = ""
    # An entry naming a bucket/container that does not exist (object stores).
    unknown_container: dict[str, Any] | None = None
    # Entry keys that make an upload confirm its bytes in small steps (small parts), so a
    # test can cancel or crash it half-way through a 64 MiB file.
    small_steps: dict[str, Any] = field(default_factory=dict)
    # Makes what the server holds so far survive a SIGKILL (Azurite saves its metadata every
    # few seconds: a graceful restart saves it now); None: everything already does.
    persist: Callable[[], None] | None = None


class TargetFactory(Protocol):
    def new(self) -> BackendTarget: ...


_SEQ = itertools.count()


def _unique() -> str:
    return f"t{next(_SEQ)}-{uuid.uuid4().hex[:8]}"


class _BucketServer(Protocol):
    def vfs_options(self, bucket: str, *, prefix: str = "", **extra: Any) -> dict[str, Any]: ...
    def create_bucket(self, name: str) -> None: ...


def _bucket_name() -> str:
    return f"aftd-{uuid.uuid4().hex[:12]}"


def _new_bucket(server: _BucketServer) -> str:
    """A bucket made for this session's targets (each one a prefix of its own in it)."""
    name = _bucket_name()
    server.create_bucket(name)
    return name


def _unknown_container(server: _BucketServer | AzuriteServer) -> dict[str, Any]:
    """An entry naming a bucket (or container) that does not exist."""
    return server.vfs_options(f"no-such-{uuid.uuid4().hex[:12]}")


@dataclass
class LocalFactory:
    base: Path

    def new(self) -> BackendTarget:
        root = self.base / _unique()
        root.mkdir()
        return BackendTarget("local", {"type": "local", "root": str(root)}, {}, local_dir=root)


@dataclass
class SftpFactory:
    sshd: SshdServer
    wrong_key: str  # a valid private key the server does not accept

    def new(self) -> BackendTarget:
        root = self.sshd.root / _unique()
        root.mkdir()
        return BackendTarget(
            "sftp", self.sshd.vfs_options(root=str(root)),
            {"sshd-key": self.sshd.user_key_text}, server=_SshdRestart(self.sshd),
            local_dir=root, bad_secrets={"sshd-key": self.wrong_key}, bad_value=self.wrong_key)


@dataclass
class _SshdRestart:
    sshd: SshdServer

    def kill(self) -> None:
        self.sshd.kill()

    def start(self) -> None:
        if self.sshd.proc is None or self.sshd.proc.poll() is not None:
            self.sshd.restart()


@dataclass
class FtpFactory:
    server: FtpServer
    id: str

    def new(self) -> BackendTarget:
        name = _unique()
        root = self.server.root / name
        root.mkdir()
        if self.server.owner is not None:  # vsftpd writes as its system user
            os.chown(root, *self.server.owner)
        wrong = "wrong-" + uuid.uuid4().hex
        return BackendTarget(
            self.id, self.server.vfs_options(root=f"/{name}"), self.server.secrets,
            server=self.server, local_dir=root, strict_names=True,
            bad_secrets={k: wrong for k in self.server.secrets}, bad_value=wrong)


@dataclass
class S3Factory:
    server: S3Server
    id: str
    bucket: str = ""

    def new(self) -> BackendTarget:
        self.bucket = self.bucket or _new_bucket(self.server)
        prefix = _unique() + "/"
        wrong = "wrong-" + uuid.uuid4().hex
        secret_key = f"{self.server.kind}-secret-key"
        return BackendTarget(
            self.id, self.server.vfs_options(self.bucket, prefix=prefix), self.server.secrets,
            server=self.server, strict_names=True,
            leftovers=lambda: _incomplete_uploads(self.server, self.bucket, prefix),
            bad_secrets={**self.server.secrets, secret_key: wrong}, bad_value=wrong,
            unknown_container=_unknown_container(self.server),
            # one part at a time: parts confirm in order, so "half the bytes confirmed" comes
            # well before the upload completes, however loaded the machine
            small_steps={"part_size_mib": 5, "max_parts_in_flight": 1})


async def _incomplete_uploads(server: S3Server, bucket: str, prefix: str) -> list[str]:
    """Multipart uploads under ``prefix`` that were neither completed nor aborted."""
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **server.client_kwargs()) as s3:
        try:
            r = await s3.list_multipart_uploads(Bucket=bucket)
        except s3.exceptions.NoSuchUpload:
            # rclone serve s3 answers this to a listing after a restart, when it has no
            # uploads at all (it keeps none across restarts)
            return []
    return [u["Key"] for u in r.get("Uploads", []) if u["Key"].startswith(prefix)]


@dataclass
class AzureFactory:
    server: AzuriteServer
    container: str = ""

    def new(self) -> BackendTarget:
        if not self.container:
            self.container = _bucket_name()
            with _blob_service(self.server) as svc:
                svc.create_container(self.container)
        prefix = _unique() + "/"
        wrong = base64.b64encode(os.urandom(64)).decode()
        return BackendTarget(
            "azure", self.server.vfs_options(self.container, prefix=prefix),
            dict(self.server.secrets), server=self.server, strict_names=True,
            leftovers=lambda: _uncommitted_blobs(self.server, self.container, prefix),
            bad_secrets={**self.server.secrets, "azurite-key": wrong}, bad_value=wrong,
            unknown_container=_unknown_container(self.server),
            small_steps={"block_size_mib": 1}, persist=self.server.restart)


def _blob_service(server: AzuriteServer) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(server.account_url, credential=server.credential)


async def _uncommitted_blobs(server: AzuriteServer, container: str, prefix: str) -> list[str]:
    """Blobs under ``prefix`` that have uncommitted blocks and no committed content: what an
    upload that was neither committed nor cleaned up leaves (Azure's incomplete upload)."""
    with _blob_service(server) as svc:
        blobs = svc.get_container_client(container).list_blobs(
            name_starts_with=prefix, include=["uncommittedblobs"])
        return [b.name for b in blobs if not b.size]


@dataclass
class GcsFactory:
    server: GcsServer
    bucket: str = ""

    def new(self) -> BackendTarget:
        self.bucket = self.bucket or _new_bucket(self.server)
        prefix = _unique() + "/"
        # fake-gcs-server checks no credentials: no wrong-credential case here (the GCS
        # backend's own tests check malformed service-account JSON).
        return BackendTarget(
            "gcs", self.server.vfs_options(self.bucket, prefix=prefix),
            dict(self.server.secrets), server=self.server, strict_names=True,
            unknown_container=_unknown_container(self.server),
            small_steps={"chunk_size_mib": 1})


# -- the fixtures (imported by tests/vfs/conftest.py) -------------------------------------------

@pytest.fixture(scope="session")
def local_backend(tmp_path_factory: pytest.TempPathFactory) -> LocalFactory:
    return LocalFactory(tmp_path_factory.mktemp("local_backend"))


@pytest.fixture(scope="session")
def sftp_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpFactory]:
    """An sshd of its own: crash tests kill and restart it."""
    work = tmp_path_factory.mktemp("sftp_backend")
    srv = start_sshd(work / "sshd")
    other = start_sshd(work / "other")  # only for a key this server does not accept
    other.kill()
    yield SftpFactory(srv, other.user_key_text)
    srv.kill()


@pytest.fixture(scope="session")
def vsftpd_backend(vsftpd: FtpServer) -> FtpFactory:
    return FtpFactory(vsftpd, "ftps")


@pytest.fixture(scope="session")
def pyftpdlib_backend(pyftpdlib_ftps: FtpServer) -> FtpFactory:
    return FtpFactory(pyftpdlib_ftps, "ftps-pyftpdlib")


@pytest.fixture(scope="session")
def azurite_backend(azurite: AzuriteServer) -> AzureFactory:
    return AzureFactory(azurite)


@pytest.fixture(scope="session")
def fake_gcs_backend(fake_gcs: GcsServer) -> GcsFactory:
    return GcsFactory(fake_gcs)


@pytest.fixture(scope="session")
def seaweedfs_backend(seaweedfs: S3Server) -> S3Factory:
    return S3Factory(seaweedfs, "s3")


@pytest.fixture(scope="session")
def rclone_s3_backend(rclone_s3: S3Server) -> S3Factory:
    return S3Factory(rclone_s3, "s3-rclone")
