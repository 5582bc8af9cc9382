"""Fixtures for the VFS tests: local roots, real sshd and FTPS servers (also behind the latency
relay of ``bench/latency_relay.py``), a dict-backed secret resolver."""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # make `tests.fixtures` importable
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import latency_relay

from aftd import progress
from aftd.configmodel import Section
from aftd.errors import SecretError, TransferError
from aftd.jobs.model import Progress
from aftd.vfs.base import Vfs
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.registry import VfsPool
from tests.fixtures.ftp import FtpServer
from tests.fixtures.sshd import SshdServer, start_sshd
from tests.vfs.backends import (  # noqa: F401  (the backends' fixtures)
    BACKENDS,
    BackendTarget,
    azurite_backend,
    fake_gcs_backend,
    local_backend,
    pyftpdlib_backend,
    rclone_s3_backend,
    seaweedfs_backend,
    sftp_backend,
    vsftpd_backend,
)

# Where a remote VFS keeps its files on this machine (its server's directory), for tests that
# prepare or inspect files behind the server's back.
LOCAL_ROOTS: weakref.WeakKeyDictionary[Vfs, Path] = weakref.WeakKeyDictionary()


class DictSecrets:
    """The SecretResolver protocol over a dict; counts look-ups to prove use-time resolution."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls: list[str] = []

    async def get(self, name: str) -> str:
        self.calls.append(name)
        try:
            return self.values[name]
        except KeyError:
            raise SecretError(f"secret {name!r} not found") from None


class At(Progress):
    """A progress sink that calls ``action`` once, when the copy has moved ``at`` bytes."""

    def __init__(self, at: int, action: Callable[[], object]) -> None:
        super().__init__()
        self.at, self.action, self.fired = at, action, False

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        super().advance(files, nbytes)
        if self.bytes_done >= self.at and not self.fired:
            self.fired = True
            self.action()


@contextmanager
def progress_to(sink: progress.ProgressSink) -> Iterator[None]:
    """Copies started in the block report their progress to ``sink``."""
    token = progress.CURRENT.set(sink)
    try:
        yield
    finally:
        progress.CURRENT.reset(token)


async def stat_error(pool: VfsPool, name: str, path: str = "", *,
                     match: str | None = None) -> TransferError:
    """The error ``stat(path)`` on the VFS ``name`` must raise (its message matching ``match``,
    a regular expression, when given); the pool is closed after."""
    try:
        with pytest.raises(TransferError, match=match) as ei:
            await pool.get(name).stat(path)
    finally:
        await pool.aclose()
    return ei.value


def make_pool(entries: dict[str, dict[str, Any]], secrets: DictSecrets) -> VfsPool:
    configs = parse_vfs_section(Section(entries, "test.toml", "vfs"))
    return VfsPool(configs, secrets)


@pytest.fixture(scope="session")
def sshd_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("sshd_a"))
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def sshd_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("sshd_b"))
    yield srv
    srv.kill()


@pytest.fixture
async def ssh_conn(sshd_a: SshdServer) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """A plain asyncssh connection to ``sshd_a`` with AES-GCM, the cipher the fast path
    (aftd/vfs/sftp_fastpath.py) and the quiet logging patch (aftd/vfs/sftp_quiet.py) are checked
    with."""
    c = await asyncssh.connect(
        sshd_a.host, port=sshd_a.port, username=sshd_a.user,
        client_keys=[str(sshd_a.user_key)], known_hosts=str(sshd_a.known_hosts),
        encryption_algs=["aes128-gcm@openssh.com"])
    yield c
    c.close()
    await c.wait_closed()


@pytest.fixture
def sshd_own(tmp_path: Path) -> Iterator[SshdServer]:
    """A server of the test's own, for tests that kill it."""
    srv = start_sshd(tmp_path / "sshd")
    yield srv
    srv.kill()


@pytest.fixture
async def pool(tmp_path: Path, sshd_a: SshdServer, sshd_b: SshdServer) -> AsyncIterator[VfsPool]:
    """Four VFS: two local roots, and one sub-root on each of two sshd servers."""
    roots = {n: tmp_path / n for n in ("l1", "l2")}
    for r in roots.values():
        r.mkdir()
    sa, sb = sshd_a.root / tmp_path.name, sshd_b.root / tmp_path.name
    sa.mkdir()
    sb.mkdir()
    # Each server trusts its own user key, so each VFS names its own key secret.
    entries = {
        "l1": {"type": "local", "root": str(roots["l1"])},
        "l2": {"type": "local", "root": str(roots["l2"])},
        "s1": sshd_a.vfs_options(root=str(sa)),
        "s2": sshd_b.vfs_options(root=str(sb), key_secret="sshd-b-key"),
    }
    p = make_pool(entries, DictSecrets({"sshd-key": sshd_a.user_key_text,
                                        "sshd-b-key": sshd_b.user_key_text}))
    yield p
    await p.aclose()


def sftp_and_local(srv: SshdServer, local: Path, remote: Path, **opts: Any) -> VfsPool:
    """Two VFS: "s", ``remote`` (a directory in the server's root) over SFTP with ``opts``,
    and "l", the local directory ``local``."""
    entries = {"s": srv.vfs_options(root=str(remote), **opts),
               "l": {"type": "local", "root": str(local)}}
    return make_pool(entries, DictSecrets({"sshd-key": srv.user_key_text}))


def relayed_sftp_and_local(srv: SshdServer, local: Path, remote: Path, port: int,
                           **opts: Any) -> VfsPool:
    """:func:`sftp_and_local` through a relay listening on ``port``; the host key is pinned, as
    no known_hosts names the relay's address."""
    return sftp_and_local(srv, local, remote, port=port, known_hosts="",
                          host_key_sha256=srv.host_key_sha256, **opts)


@pytest.fixture
def sftp_dirs(tmp_path: Path, sshd_a: SshdServer) -> tuple[Path, Path]:
    """A local directory and a directory of the test's own on ``sshd_a`` (both empty)."""
    local, remote = tmp_path / "local", sshd_a.root / f"dirs-{tmp_path.name}"
    local.mkdir()
    remote.mkdir()
    return local, remote


@asynccontextmanager
async def relay_to(srv: SshdServer, rtt_s: float, rate_bps: float = 0.0) -> AsyncIterator[int]:
    """``srv`` behind a relay adding ``rtt_s`` of round trip (and ``rate_bps`` each way, 0:
    unlimited); yields the relay's port."""
    relay = latency_relay.Relay(("127.0.0.1", srv.port), rtt_s, rate_bps=rate_bps)
    port = await relay.start()
    try:
        yield port
    finally:
        await relay.aclose()


def ftp_subroot(srv: FtpServer, name: str) -> Path:
    """A directory of the test's own in an FTP server's root, writable by the server."""
    d = srv.root / name
    d.mkdir()
    if srv.owner is not None:
        os.chown(d, *srv.owner)
    return d


@pytest.fixture
async def ftp_pool(tmp_path: Path, vsftpd: FtpServer, pyftpdlib_ftps: FtpServer,
                   ) -> AsyncIterator[VfsPool]:
    """FTPS VFS on a directory of their own: f1 on vsftpd (TLS session reuse required), f2 on
    pyftpdlib (MLSD, MFMT), and a local l1."""
    local = tmp_path / "ftp-local"
    local.mkdir()
    servers = {"f1": vsftpd, "f2": pyftpdlib_ftps}
    dirs = {n: ftp_subroot(srv, tmp_path.name) for n, srv in servers.items()}
    entries: dict[str, dict[str, Any]] = {
        n: srv.vfs_options(root=f"/{tmp_path.name}") for n, srv in servers.items()}
    entries["l1"] = {"type": "local", "root": str(local)}
    p = make_pool(entries, DictSecrets({**vsftpd.secrets, **pyftpdlib_ftps.secrets}))
    for n, d in dirs.items():
        LOCAL_ROOTS[p.get(n)] = d
    yield p
    await p.aclose()


def target_of(request: pytest.FixtureRequest, backend: str) -> BackendTarget:
    """A new, empty VFS on ``backend`` (an id of :data:`~tests.vfs.backends.BACKENDS`)."""
    target: BackendTarget = request.getfixturevalue(BACKENDS[backend]).new()
    return target


@asynccontextmanager
async def target_vfs(target: BackendTarget, name: str = "v",
                     secrets: dict[str, str] | None = None) -> AsyncIterator[Vfs]:
    """The target as a VFS of a pool of its own (closed afterwards)."""
    pool = make_pool({name: target.entry}, DictSecrets(dict(
        target.secrets if secrets is None else secrets)))
    vfs = pool.get(name)
    if target.local_dir is not None:
        LOCAL_ROOTS[vfs] = target.local_dir
    try:
        yield vfs
    finally:
        await pool.aclose()
