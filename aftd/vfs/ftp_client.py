"""One FTP(S) control connection, blocking (the standard library's ``ftplib``), run on a thread.

Why threads and ``ftplib`` rather than asyncio: FTPS servers that demand TLS session reuse on the
data channel (vsftpd's ``require_ssl_reuse=YES``, its default, and FileZilla Server) refuse a
data connection whose TLS session is not the control connection's. ``ssl.SSLContext.wrap_socket``
(the control connection) and ``wrap_bio`` (data connections, :mod:`aftd.vfs.ftp_tls`: large
batches per system call) take ``session=`` (public API); asyncio's TLS has no such parameter.
Blocking sockets also let OpenSSL encrypt and decrypt with the GIL released, off the event
loop. Each pooled connection
runs one call at a time on the VFS's own bounded thread pool (:mod:`aftd.vfs.ftp_pool`).

Hardening: every path is sent as one command argument and ``putline`` refuses CR/LF (command
injection); passive mode connects only to the control connection's peer (EPSV carries no
address; a PASV answer naming another host is refused, the FTP bounce/redirect problem);
an active-mode data connection must come from that peer too; the certificate is checked (CA
or pinned SHA-256) on the control *and* the data connections, before the password is sent.
"""

from __future__ import annotations

import calendar
import ftplib
import hashlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftd.vfs.ftp_tls import TlsDataChannel

__all__ = [
    "CONNECTION_ERRORS",
    "CertificateError",
    "DataConn",
    "Endpoint",
    "FtpClient",
    "LoginError",
    "PassiveAddressError",
    "ServerFeatures",
    "TlsRefusedError",
    "format_mdtm",
    "parse_features",
    "parse_mdtm",
    "tls_context",
]

CRLF = "\r\n"
# What a dead or unusable control connection raises; the pool drops such a connection.
CONNECTION_ERRORS = (OSError, EOFError, ssl.SSLError, ftplib.error_proto)
# A data connection: plain (tls = "none") or TLS through memory buffers (aftd.vfs.ftp_tls).
DataConn = socket.socket | TlsDataChannel
_PIPELINE = 32  # commands sent before reading their replies (small enough for socket buffers)
_EPSV = re.compile(r"\((.)\1\1(\d+)\1\)")
_MDTM = re.compile(r"^(\d{14})(?:\.(\d+))?$")


class CertificateError(ssl.SSLError):
    """The server's certificate is not trusted (CA check failed or pin mismatch)."""


class LoginError(Exception):
    """The server refused the user or the password (the reply, with the password masked)."""


class TlsRefusedError(Exception):
    """The server did not accept AUTH TLS."""


class PassiveAddressError(ftplib.Error):
    """The server named a data address that is not its own (refused: FTP bounce/redirect)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect (no secret in here: the password is passed to :meth:`open`)."""

    vfs: str
    host: str
    port: int
    user: str
    tls: str  # "explicit" | "implicit" | "none"
    cert_sha256: str = ""
    passive: bool = True
    connect_timeout: float = 15.0
    timeout: float = 60.0

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass
class ServerFeatures:
    """What ``FEAT`` announced (RFC 2389); an empty set when the server has no FEAT."""

    names: set[str] = field(default_factory=set)
    hash_algos: tuple[str, ...] = ()  # the HASH command's algorithms (draft-bryan-ftpext-hash)
    mlst_facts: tuple[str, ...] = ()  # facts MLST/MLSD can show ("size*": shown now)

    @property
    def mlst(self) -> bool:
        return "MLST" in self.names

    @property
    def mfmt(self) -> bool:
        return "MFMT" in self.names

    @property
    def mdtm(self) -> bool:
        return "MDTM" in self.names

    @property
    def rest_stream(self) -> bool:
        return "REST" in self.names

    @property
    def sha256_command(self) -> str:
        """``HASH`` or ``XSHA256`` when the server can hash a stored file, else ``""``."""
        if any(a.upper().rstrip("*") == "SHA-256" for a in self.hash_algos):
            return "HASH"
        return "XSHA256" if "XSHA256" in self.names else ""


def parse_features(reply: str) -> ServerFeatures:
    """The FEAT reply's feature lines (``211-Features:`` … ``211 End``)."""
    feats = ServerFeatures()
    for line in reply.splitlines()[1:]:
        if not line.startswith(" "):
            continue
        name, _, args = line.strip().partition(" ")
        feats.names.add(name.upper())
        if name.upper() == "HASH":
            feats.hash_algos = tuple(a for a in args.split(";") if a)
        elif name.upper() == "MLST":
            feats.mlst_facts = tuple(f.lower() for f in args.split(";") if f)
    return feats


def tls_context(ca_file: Path | None, cert_sha256: str) -> ssl.SSLContext:
    """The context of a pool: every connection and its data connections share it (a TLS
    session can only be resumed through the context that made it)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_sha256:
        # The pin replaces the CA and name check; it is compared after every handshake.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fingerprint(sock: ssl.SSLSocket | TlsDataChannel) -> str:
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else ""


def parse_mdtm(value: str) -> float | None:
    """``YYYYMMDDHHMMSS[.fff]`` (UTC) as seconds since the epoch; None when malformed."""
    m = _MDTM.match(value.strip())
    if m is None:
        return None
    try:
        t = time.strptime(m.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    frac = float(f"0.{m.group(2)}") if m.group(2) else 0.0
    return calendar.timegm(t) + frac


def format_mdtm(mtime: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(int(mtime)))


def _no_delay(sock: socket.socket) -> None:
    """No Nagle: a transfer ends with a small TLS close_notify right after the last data, and
    Nagle would hold it until the server's delayed ACK (tens of ms per file)."""
    with suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _same_host(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped:
        y = y.ipv4_mapped
    return x == y


class FtpClient(ftplib.FTP_TLS):
    """``ftplib.FTP_TLS`` with implicit TLS, pinning, data-channel session reuse, EPSV first,
    PASV/active address checks, pipelined commands and byte-exact (surrogate-escaped) names."""

    def __init__(self, ep: Endpoint, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context, timeout=ep.connect_timeout)
        self.ep = ep
        self.host = ep.host
        self.port = ep.port
        self.protected = False  # PROT P: data connections are TLS
        self.use_epsv: bool | None = None  # None: not tried yet
        self.features = ServerFeatures()
        self.login_dir = "/"
        self.data: DataConn | None = None  # the transfer in progress (for abort)
        self._rfile: Any = None  # replies are read as bytes (see getline)
        self.set_pasv(ep.passive)

    @property
    def control(self) -> socket.socket:
        """The control connection's socket (TLS once secured)."""
        if self.sock is None:
            raise EOFError("the control connection is closed")
        return self.sock

    # -- connecting ------------------------------------------------------------------------
    def open(self, password: str) -> None:
        """Connect, secure, log in, learn the features; raises on any failure (and closes)."""
        try:
            self._connect()
            if self.ep.tls == "explicit":
                self.auth()
            self._login(password)
            self.control.settimeout(self.ep.timeout)
            self.timeout = self.ep.timeout  # data connections from now on
            if self.ep.tls != "none":
                self.voidcmd("PBSZ 0")
                self.voidcmd("PROT P")
                self.protected = True
            self.voidcmd("TYPE I")
            self._features()
            self.login_dir = self._pwd()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        sock = socket.create_connection((self.ep.host, self.ep.port), self.ep.connect_timeout)
        _no_delay(sock)
        self.sock = sock
        self.af = sock.family
        if self.ep.tls == "implicit":
            self.sock = self._wrap(sock)
        self._rfile = self.control.makefile("rb")
        self.welcome = self.getresp()

    def auth(self) -> str:
        try:
            resp = self.voidcmd("AUTH TLS")
        except ftplib.error_perm as exc:
            raise TlsRefusedError(str(exc)) from None
        self.sock = self._wrap(self.control)
        self._rfile = self.control.makefile("rb")
        return resp

    def _wrap(self, sock: socket.socket, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        assert self.context is not None
        try:
            tls = self.context.wrap_socket(sock, server_hostname=self.ep.host, session=session)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise CertificateError(f"certificate not trusted: {exc.verify_message}") from None
        self._check_pin(tls, resumed=session is not None and bool(tls.session_reused))
        return tls

    def _wrap_data(self, sock: socket.socket, session: ssl.SSLSession | None,
                   ) -> TlsDataChannel:
        """TLS on a data connection, resuming ``session`` (see aftd.vfs.ftp_tls)."""
        assert self.context is not None
        tls = TlsDataChannel(sock, self.context, self.ep.host, session)
        try:
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            raise CertificateError(f"certificate not trusted: {exc.verify_message}") from None
        self._check_pin(tls, resumed=session is not None and tls.session_reused)
        return tls

    def _check_pin(self, tls: ssl.SSLSocket | TlsDataChannel, *, resumed: bool) -> None:
        """A resumed session was pinned when it was made (no certificate is sent again)."""
        pin = self.ep.cert_sha256
        if pin and fingerprint(tls) != pin and not resumed:
            offered = fingerprint(tls)
            tls.close()
            raise CertificateError(f"certificate does not match the pinned cert_sha256 {pin}; "
                                   f"the server offered {offered or 'no certificate'}")

    def _login(self, password: str) -> None:
        try:
            ftplib.FTP.login(self, self.ep.user, password)
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as exc:
            text = str(exc).replace(password, "***") if password else str(exc)
            raise LoginError(text) from None

    def _features(self) -> None:
        try:
            self.features = parse_features(self.sendcmd("FEAT"))
        except ftplib.error_perm:
            self.features = ServerFeatures()
        if "UTF8" in self.features.names:
            with suppress(ftplib.Error):  # names are sent as UTF-8 bytes either way
                self.sendcmd("OPTS UTF8 ON")
        offered = {f.rstrip("*") for f in self.features.mlst_facts}
        want = [f for f in ("type", "size", "modify", "unix.mode") if f in offered]
        if any(f"{f}*" not in self.features.mlst_facts for f in want):
            with suppress(ftplib.Error):  # facts a listing should carry (pyftpdlib: no mode)
                self.sendcmd(f"OPTS MLST {';'.join(want)};")
        if self.features.sha256_command == "HASH":
            try:
                self.sendcmd("OPTS HASH SHA-256")
            except ftplib.Error:
                self.features.hash_algos = ()

    def _pwd(self) -> str:
        resp = self.sendcmd("PWD")
        return ftplib.parse257(resp) or "/"

    # -- lines, with names as bytes ---------------------------------------------------------
    def putline(self, line: str) -> None:
        if "\r" in line or "\n" in line:
            raise ValueError("an FTP command must not contain CR or LF")
        self.control.sendall((line + CRLF).encode("utf-8", "surrogateescape"))

    def getline(self) -> str:
        if self._rfile is None:
            raise EOFError("the control connection is closed")
        raw: bytes = self._rfile.readline(self.maxline + 1)
        if len(raw) > self.maxline:
            raise ftplib.error_proto(f"reply line longer than {self.maxline} bytes")
        if not raw:
            raise EOFError("the server closed the control connection")
        line = raw.decode("utf-8", "surrogateescape")
        return line.rstrip("\r\n")

    def pipeline(self, commands: Iterable[str]) -> list[str | ftplib.Error]:
        """Send commands in batches without waiting, then read one reply each (RFC 959 allows
        it; vsftpd and pyftpdlib answer in order). A 4xx/5xx reply comes back as its error."""
        out: list[str | ftplib.Error] = []
        todo = list(commands)
        for i in range(0, len(todo), _PIPELINE):
            batch = todo[i:i + _PIPELINE]
            for line in batch:
                if "\r" in line or "\n" in line:
                    raise ValueError("an FTP command must not contain CR or LF")
            self.control.sendall(
                "".join(c + CRLF for c in batch).encode("utf-8", "surrogateescape"))
            for _ in batch:
                try:
                    out.append(self.getresp())
                except (ftplib.error_perm, ftplib.error_temp) as exc:
                    out.append(exc)
        return out

    # -- data connections --------------------------------------------------------------------
    def makepasv(self) -> tuple[str, int]:
        peer = self.control.getpeername()[0]
        if self.use_epsv is not False:
            try:
                resp = self.sendcmd("EPSV")
            except ftplib.error_perm:
                self.use_epsv = False  # 500/502: not offered; PASV from now on
            else:
                self.use_epsv = True
                m = _EPSV.search(resp)
                if m is None:
                    raise ftplib.error_proto(f"unreadable EPSV reply: {resp}")
                return peer, int(m.group(2))
        host, port = ftplib.parse227(self.sendcmd("PASV"))
        if not _same_host(host, peer):
            raise PassiveAddressError(
                f"the server's PASV reply names {host}:{port}, not its own address {peer}; "
                "refused (a data connection goes only to the server)")
        return host, port

    def ntransfercmd(self, cmd: str, rest: int | str | None = None,  # type: ignore[override]
                     ) -> tuple[DataConn, int | None]:
        # The plain step connects and sends the command; the TLS handshake follows the 150
        # reply, which is when vsftpd expects it (aioftp handshakes earlier and hangs there).
        plain, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        conn: DataConn = plain
        try:
            _no_delay(plain)
            if not self.ep.passive:
                peer = self.control.getpeername()[0]
                if not _same_host(plain.getpeername()[0], peer):
                    raise PassiveAddressError(
                        f"an active-mode data connection came from {plain.getpeername()[0]}, "
                        f"not the server {peer}; refused")
            if self.protected:
                # Read the session per transfer: with TLS 1.3 the ticket arrives after the
                # handshake, with the first replies on the control channel.
                session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
                conn = self._wrap_data(plain, session)
        except BaseException:
            plain.close()
            raise
        self.data = conn
        return conn, size

    def end_transfer(self, conn: DataConn, *, sent: bool) -> str:
        """Close a data connection properly and read the transfer's final reply (226)."""
        try:
            if isinstance(conn, TlsDataChannel):
                try:
                    conn.unwrap()
                except (OSError, ValueError):
                    if sent:  # an upload must end with a clean TLS close: vsftpd checks it
                        raise
        finally:
            conn.close()
            self.data = None
        return self.voidresp()

    def abort_sockets(self) -> None:
        """From another thread: make a blocked call on this connection fail at once."""
        data = self.data
        if isinstance(data, TlsDataChannel):
            data.abort()
        elif data is not None:
            with suppress(OSError):
                data.shutdown(socket.SHUT_RDWR)
        if self.sock is not None:
            with suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        data, self.data = self.data, None
        rfile, self._rfile = self._rfile, None
        try:
            if data is not None:
                data.close()
            if rfile is not None:
                rfile.close()
        finally:
            super().close()
