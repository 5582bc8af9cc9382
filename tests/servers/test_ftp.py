"""FTPS servers (vsftpd with TLS session reuse required, pyftpdlib): which Python clients work,
and which commands each server offers (the summary is in tests/fixtures/ftp.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import io
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.ftp import FtpServer

MDTM_TIME = "20200102030405"


@pytest.fixture(params=["vsftpd", "pyftpdlib_ftps"])
def ftp_server(request: pytest.FixtureRequest) -> FtpServer:
    server: FtpServer = request.getfixturevalue(request.param)
    return server


class ReuseFTP_TLS(ftplib.FTP_TLS):
    """``FTP_TLS`` whose data connections resume the control connection's TLS session (what
    vsftpd's ``require_ssl_reuse`` and FileZilla Server demand). Public ``ssl`` API only."""

    data_sessions_reused: list[bool]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.data_sessions_reused = []
        self._protected = False

    def prot_p(self) -> str:
        resp = super().prot_p()
        self._protected = True
        return resp

    def prot_c(self) -> str:
        resp = super().prot_c()
        self._protected = False
        return resp

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        # The plain FTP step connects and sends the command; the TLS handshake comes after the
        # server's 150 reply, which is when vsftpd expects it.
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321 - TLS is added below
        if self._protected:
            assert isinstance(self.sock, ssl.SSLSocket)
            # Read the session now, not at login: with TLS 1.3 the ticket arrives after the
            # handshake, with the first replies read on the control channel.
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
            self.data_sessions_reused.append(conn.session_reused)
        return conn, size


def _connect(server: FtpServer, cls: type[ftplib.FTP_TLS] = ReuseFTP_TLS, *,
             max_tls: ssl.TLSVersion | None = None, password: str | None = None) -> Any:
    ctx = server.ssl_context()
    if max_tls is not None:
        ctx.maximum_version = max_tls
    ftp = cls(context=ctx, timeout=20)
    try:
        ftp.connect(server.host, server.port)
        ftp.login(server.user, password if password is not None else server.password)
        ftp.prot_p()
    except BaseException:
        ftp.close()
        raise
    return ftp


@pytest.fixture
def ftp(ftp_server: FtpServer) -> Iterator[Any]:
    client = _connect(ftp_server)
    yield client
    client.close()


def _retr(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    buf = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", buf.write, rest=rest)
    return buf.getvalue()


def test_plain_ftp_login_is_refused(ftp_server: FtpServer) -> None:
    plain = ftplib.FTP(timeout=20)  # noqa: S321 - proving plain FTP is refused
    plain.connect(ftp_server.host, ftp_server.port)
    try:
        with pytest.raises(ftplib.error_perm):
            plain.login(ftp_server.user, ftp_server.password)
    finally:
        plain.close()


def test_wrong_password_is_refused(ftp_server: FtpServer) -> None:
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        _connect(ftp_server, password="not-the-password")


def test_server_certificate_matches_its_pin(ftp_server: FtpServer) -> None:
    ftp = _connect(ftp_server)
    try:
        der = ftp.sock.getpeercert(binary_form=True)
        assert hashlib.sha256(der).hexdigest() == ftp_server.cert_sha256
    finally:
        ftp.close()


def test_stdlib_ftp_tls_without_session_reuse(ftp_server: FtpServer) -> None:
    ftp = _connect(ftp_server, ftplib.FTP_TLS)
    try:
        if ftp_server.requires_session_reuse:
            with pytest.raises(ftplib.error_perm, match=r"522 .*session reuse required"):
                ftp.storbinary("STOR plain.bin", io.BytesIO(b"x"))
        else:
            ftp.storbinary("STOR plain.bin", io.BytesIO(b"x"))
            ftp.delete("plain.bin")
    finally:
        ftp.close()


@pytest.mark.parametrize("max_tls", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_session_reuse_transfers_and_resume(ftp_server: FtpServer,
                                            max_tls: ssl.TLSVersion) -> None:
    ftp = _connect(ftp_server, max_tls=max_tls)
    name = f"up-{max_tls.name}.bin"
    try:
        assert ftp.sock.version() == max_tls.name.replace("v1_", "v1.")
        data = bytes(range(256)) * 400
        ftp.storbinary(f"STOR {name}", io.BytesIO(data))
        assert _retr(ftp, name) == data
        assert ftp.size(name) == len(data)
        assert _retr(ftp, name, rest=len(data) - 100) == data[-100:]  # REST + RETR: resume a read
        # Resume an upload: REST + STOR writes from the offset (APPE appends).
        ftp.storbinary(f"STOR {name}.part", io.BytesIO(data[:1000]))
        ftp.storbinary(f"STOR {name}.part", io.BytesIO(data[1000:]), rest=1000)
        assert _retr(ftp, f"{name}.part") == data
        ftp.storbinary(f"APPE {name}.part", io.BytesIO(b"more"))
        assert ftp.size(f"{name}.part") == len(data) + 4
        assert ftp.data_sessions_reused and all(ftp.data_sessions_reused)
    finally:
        ftp.close()


def test_listing_rename_mtime_and_directories(ftp_server: FtpServer, ftp: Any) -> None:
    ftp.mkd("d1")
    ftp.storbinary("STOR d1/a.txt", io.BytesIO(b"alpha"))
    lines: list[str] = []
    ftp.retrlines("LIST d1", lines.append)
    assert len(lines) == 1 and lines[0].endswith(" a.txt") and " 5 " in lines[0]
    assert ftp.nlst("d1") in (["d1/a.txt"], ["a.txt"])
    ftp.rename("d1/a.txt", "d1/b.txt")  # RNFR/RNTO: the publish step of an upload
    if ftp_server.kind == "vsftpd":
        assert ftp.sendcmd(f"MDTM {MDTM_TIME} d1/b.txt").startswith("213")
        with pytest.raises(ftplib.error_perm, match=r"^500"):
            ftp.sendcmd(f"MFMT {MDTM_TIME} d1/b.txt")
        with pytest.raises(ftplib.error_perm, match=r"^500"):
            list(ftp.mlsd("d1"))
    else:
        assert ftp.sendcmd(f"MFMT {MDTM_TIME} d1/b.txt").startswith("213")
        facts = dict(ftp.mlsd("d1"))
        assert facts["b.txt"]["size"] == "5" and facts["b.txt"]["modify"] == MDTM_TIME
    assert ftp.sendcmd("MDTM d1/b.txt") == f"213 {MDTM_TIME}"
    ftp.delete("d1/b.txt")
    ftp.rmd("d1")
    assert "d1" not in ftp.nlst()


def test_no_remote_hash_commands(ftp: Any) -> None:
    features = ftp.sendcmd("FEAT")
    assert not re.search(r"^\s*(HASH|XSHA256|XSHA1|XMD5|XCRC)\b", features, re.M)
    ftp.storbinary("STOR h.txt", io.BytesIO(b"hash me"))
    for cmd in ("HASH h.txt", "XSHA256 h.txt", "XMD5 h.txt"):
        with pytest.raises(ftplib.error_perm, match=r"^50[0-2]"):
            ftp.sendcmd(cmd)
    ftp.delete("h.txt")


# -- asyncio ---------------------------------------------------------------------------------


class SessionReuseContext(ssl.SSLContext):
    """An SSLContext that hands ``reuse_session`` to every TLS object it creates.

    asyncio has no session parameter; it creates its TLS object with ``wrap_bio`` (CPython's
    asyncio.sslproto), which this override feeds. The session must come from a connection of
    this very context: use one instance for the control and the data connections."""

    reuse_session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=server_hostname,
                                session=session or self.reuse_session)


class AsyncFtps:
    """Just enough explicit FTPS over asyncio streams to prove the data-channel approach."""

    def __init__(self, server: FtpServer) -> None:
        self.server = server
        self.ctx = SessionReuseContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.load_verify_locations(cafile=str(server.ca_file))
        self.reused: list[bool] = []

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.server.host, self.server.port)
        await self.reply("220")
        await self.cmd("AUTH TLS", "234")
        await self.w.start_tls(self.ctx, server_hostname=self.server.host)
        await self.cmd(f"USER {self.server.user}", "331")
        await self.cmd(f"PASS {self.server.password}", "230")
        for c in ("PBSZ 0", "PROT P", "TYPE I"):
            await self.cmd(c, "200")

    async def reply(self, expect: str) -> str:
        line = (await self.r.readline()).decode()
        text = line
        if line[3:4] == "-":  # multi-line reply: up to the line "NNN text"
            while not line.startswith(f"{text[:3]} "):
                line = (await self.r.readline()).decode()
                text += line
        assert text.startswith(expect), text
        return text

    async def cmd(self, command: str, expect: str) -> str:
        self.w.write(f"{command}\r\n".encode())
        await self.w.drain()
        return await self.reply(expect)

    async def transfer(self, command: str, upload: bytes | None = None) -> bytes:
        pasv = await self.cmd("EPSV", "229")
        port = int(re.search(r"\|\|\|(\d+)\|", pasv).group(1))  # type: ignore[union-attr]
        # Connect plain and send the command first: vsftpd starts the data TLS handshake only
        # after it (aioftp handshakes before the command and hangs there).
        dr, dw = await asyncio.open_connection(self.server.host, port)
        await self.cmd(command, "1")  # 150, or 125 from pyftpdlib
        ssl_obj = self.w.get_extra_info("ssl_object")
        self.ctx.reuse_session = ssl_obj.session
        await dw.start_tls(self.ctx, server_hostname=self.server.host)
        self.reused.append(dw.get_extra_info("ssl_object").session_reused)
        if upload is not None:
            dw.write(upload)
            await dw.drain()
            data = b""
        else:
            data = await dr.read()
        dw.close()
        await dw.wait_closed()
        await self.reply("226")
        return data

    async def close(self) -> None:
        if not self.w.is_closing():
            await self.cmd("QUIT", "221")
        self.w.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await asyncio.wait_for(self.w.wait_closed(), 20)


async def test_asyncio_start_tls_with_session_reuse(ftp_server: FtpServer) -> None:
    client = AsyncFtps(ftp_server)
    await asyncio.wait_for(client.open(), 20)
    try:
        data = bytes(range(256)) * 1000
        await asyncio.wait_for(client.transfer("STOR asyncio.bin", data), 20)
        assert await asyncio.wait_for(client.transfer("RETR asyncio.bin"), 20) == data
        listing = await asyncio.wait_for(client.transfer("LIST"), 20)
        assert b"asyncio.bin" in listing
        await client.cmd("DELE asyncio.bin", "250")
        assert client.reused == [True, True, True]
    finally:
        await client.close()


async def test_aioftp_explicit_tls_against_pyftpdlib(pyftpdlib_ftps: FtpServer) -> None:
    import aioftp

    server = pyftpdlib_ftps
    client = aioftp.Client(socket_timeout=20, connection_timeout=20)
    await client.connect(server.host, server.port)
    try:
        await client.upgrade_to_tls(server.ssl_context())
        await client.login(server.user, server.password)
        data = bytes(range(256)) * 1000
        async with client.upload_stream("aioftp.bin") as stream:
            await stream.write(data)
        async with client.download_stream("aioftp.bin") as stream:
            got = b"".join([block async for block in stream.iter_by_block()])
        assert got == data
        async with client.download_stream("aioftp.bin", offset=len(data) - 10) as stream:
            assert await stream.read() == data[-10:]
        names = {str(path): info for path, info in await client.list()}
        assert names["aioftp.bin"]["size"] == str(len(data))
        await client.rename("aioftp.bin", "aioftp2.bin")
        await client.remove("aioftp2.bin")
    finally:
        writer = client.stream.writer
        await client.quit()  # closes without waiting for the TLS shutdown: wait here
        with contextlib.suppress(OSError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 20)


def test_killed_server_restarts_with_its_files(ftp_server: FtpServer) -> None:
    ftp = _connect(ftp_server)
    ftp.storbinary("STOR survivor.txt", io.BytesIO(b"still here"))
    ftp.close()
    try:
        ftp_server.kill()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ftp_server.host, ftp_server.port), timeout=5).close()
        ftp_server.start()
        ftp = _connect(ftp_server)
        assert _retr(ftp, "survivor.txt") == b"still here"
        ftp.delete("survivor.txt")
        ftp.close()
    finally:
        ftp_server.start()
