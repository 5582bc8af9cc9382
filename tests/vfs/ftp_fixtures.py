"""The FTP servers and pools the FTP tests share: each of vsftpd and pyftpdlib (``ftp_server``),
a server of a test's own to kill (``own_server``), and a pool of one FTP and one local VFS."""

from __future__ import annotations

import os
import secrets as pysecrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aftd.vfs.registry import VfsPool
from tests.fixtures.ftp import FtpServer, start_pyftpdlib, start_vsftpd
from tests.vfs.conftest import DictSecrets, ftp_subroot, make_pool

__all__ = ["MiB", "debris", "ftp", "ftp_server", "own_server", "pool_for", "put_remote", "started"]

MiB = 1 << 20


@pytest.fixture(params=["vsftpd", "pyftpdlib_ftps"])
def ftp_server(request: pytest.FixtureRequest) -> FtpServer:
    server: FtpServer = request.getfixturevalue(request.param)
    return server


def started(start: Any, workdir: Path, **kw: Any) -> Iterator[FtpServer]:
    srv: FtpServer = start(workdir, **kw)
    try:
        yield srv
    finally:
        srv.stop()
        if srv.kind == "vsftpd":
            shutil.rmtree(srv.root.parent, ignore_errors=True)


@pytest.fixture
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FtpServer]:
    """A server of the test's own (``indirect`` param "vsftpd" or "pyftpdlib"), to kill."""
    start = start_vsftpd if request.param == "vsftpd" else start_pyftpdlib
    yield from started(start, tmp_path / "server")


def pool_for(srv: FtpServer, tmp_path: Path, secrets: DictSecrets | None = None,
             sub: bool = True, **opts: Any) -> tuple[VfsPool, Path, Path]:
    """A pool with ``f`` on ``srv`` (in a directory of the test's own) and a local ``l``;
    returns it with the two directories as seen on this machine."""
    local = tmp_path / "local"
    local.mkdir(parents=True, exist_ok=True)
    name = f"{tmp_path.name}-{pysecrets.token_hex(3)}"
    remote = ftp_subroot(srv, name) if sub else srv.root
    entries = {"f": srv.vfs_options(root=f"/{name}" if sub else "/", **opts),
               "l": {"type": "local", "root": str(local)}}
    return make_pool(entries, secrets or DictSecrets(srv.secrets)), remote, local


def put_remote(srv: FtpServer, path: Path, data: bytes) -> None:
    """A file in a server's directory that the server may change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if srv.owner is not None:
        os.chown(path, *srv.owner)
        os.chown(path.parent, *srv.owner)


@pytest.fixture
async def ftp(ftp_server: FtpServer, tmp_path: Path) -> AsyncIterator[tuple[VfsPool, Path, Path]]:
    made = pool_for(ftp_server, tmp_path)
    yield made
    await made[0].aclose()


def debris(d: Path) -> list[str]:
    return [p.name for p in d.rglob("*") if ".aftd-" in p.name]
