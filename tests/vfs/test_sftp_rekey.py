"""The hand-built SSH send path (aftd/vfs/sftp_send.py) must survive re-keying byte for byte."""

from __future__ import annotations

import asyncio
import os

import asyncssh
import pytest

from aftd.vfs.sftp_send import _FAST_ATTR, tune_sftp_writes
from aftd.vfs.sftp_speed import tune_connection
from tests.fixtures.sshd import SshdServer

BLOCK = 261_120


@pytest.mark.skipif(os.environ.get("AFTD_SFTP_FAST_PATH", "on") not in ("", "on", "all"),
                    reason="the asyncssh speed-ups are switched off in this run")

async def test_upload_through_many_rekeys_is_byte_identical(sshd_a: SshdServer) -> None:
    conn = await asyncssh.connect(
        sshd_a.host, port=sshd_a.port, username=sshd_a.user,
        client_keys=[str(sshd_a.user_key)], known_hosts=str(sshd_a.known_hosts),
        encryption_algs=["aes128-gcm@openssh.com"], rekey_bytes=3 << 20, rekey_seconds=1.0)
    kexinits = 0
    send_kexinit = conn._send_kexinit

    def counting() -> None:
        nonlocal kexinits
        kexinits += 1
        send_kexinit()

    conn._send_kexinit = counting  # type: ignore[method-assign]
    try:
        tune_connection(conn)
        assert hasattr(conn, _FAST_ATTR), "the fast send path was not installed"
        sftp = await conn.start_sftp_client()
        tune_sftp_writes(sftp)
        data = os.urandom(24 << 20)
        view = memoryview(data)
        path = f"{sshd_a.root}/rekey.bin"
        async with sftp.open(path, "wb", block_size=0) as f:
            pending: list[asyncio.Future[None]] = []
            for off in range(0, len(data), BLOCK):
                pending.append(asyncio.ensure_future(f.write(view[off:off + BLOCK], off)))
                if len(pending) >= 16:
                    await pending.pop(0)
                if off % (4 << 20) == 0:
                    await asyncio.sleep(0.25)  # let time-based re-keys fire mid-stream too
            await asyncio.gather(*pending)
        sftp.exit()
    finally:
        conn.close()
        await conn.wait_closed()
    assert kexinits >= 3, f"only {kexinits} key exchanges: the test did not exercise re-keying"
    with open(path, "rb") as fh:
        assert fh.read() == data
