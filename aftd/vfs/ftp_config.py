"""``type = "ftp"``: a directory on an FTP server, over TLS unless the config says otherwise.

Imports only pydantic and aftd's config modules (the backend itself uses the standard library's
``ftplib`` and ``ssl``), so a config loads cheaply.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import InvalidKey, OptionalPath
from aftd.vfs.config import STREAMS_MIN_SIZE, ConnectTimeoutS, StreamsMinSize, VfsConfig
from aftd.vfs.sftp_config import SFTP_MAX_REQUEST

__all__ = ["FTPS_IMPLICIT_PORT", "FTP_PORT", "FtpVfsConfig", "normalize_cert_sha256"]

FTP_PORT = 21
FTPS_IMPLICIT_PORT = 990
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalize_cert_sha256(value: str) -> str:
    """``9F:86:D0...`` or ``9f86d0...`` as lower-case hex without separators; raises ValueError."""
    text = value.replace(":", "").replace(" ", "").strip().lower()
    if not _HEX64.match(text):
        raise ValueError("must be the hex SHA-256 of the server certificate's DER bytes "
                         "(64 hex digits; colons and case are ignored), as "
                         "`openssl x509 -outform DER | sha256sum` prints it")
    return text


class FtpVfsConfig(VfsConfig):
    """A directory on an FTP server. TLS (explicit, AUTH TLS) is the default and certificates
    are always checked; plain FTP only with ``tls = "none"``."""

    EXAMPLE: ClassVar[dict[str, object]] = {
        "name": "partner_ftps", "root": "/outbound", "host": "ftp.example.net",
        "user": "transfer", "password_secret": "partner-ftp-password"}

    type: Literal["ftp"] = Field(description="the backend; decides the other keys")
    root: str = Field("", description="the directory on the server; empty: the login "
                      "directory, relative: below it", examples=["/outbound"])
    host: str = Field(min_length=1, description="the server", examples=["ftp.example.net"])
    port: int = Field(FTP_PORT, ge=1, le=65535, description=(
        f"the control port; default {FTP_PORT}, or {FTPS_IMPLICIT_PORT} with tls = \"implicit\""))
    user: str = Field(min_length=1, description="the login", examples=["transfer"])
    password_secret: str = Field(min_length=1, description="the secret holding the password",
                                 examples=["partner-ftp-password"])
    tls: Literal["explicit", "implicit", "none"] = Field("explicit", description=(
        "explicit: AUTH TLS on the control port; implicit: TLS from the first byte; "
        "none: plain FTP, password and data in clear (only on a network you trust)"))
    ca_file: OptionalPath = Field(None, description=(
        "PEM file of the CAs that sign the server's certificate; empty: the system's CAs"))
    cert_sha256: str = Field("", description=(
        "pin the server certificate instead of a CA: hex SHA-256 of its DER bytes, as "
        "`openssl x509 -outform DER | sha256sum` prints it (colons and case ignored)"))
    passive: bool = Field(True, description=(
        "passive data connections (EPSV, else PASV); false: active mode (EPRT/PORT), the "
        "server connects back to this host"))
    max_connections: int = Field(4, ge=1, le=64, description=(
        "control connections to the server, each carrying one transfer at a time (one more "
        "while a copy reads and writes the same server)"))
    connect_timeout_s: ConnectTimeoutS = Field(15.0, description=(
        "connect, TLS handshake and login within this"))
    timeout_s: float = Field(60.0, ge=1, description=(
        "longest wait for a reply or for data on a connection"))
    keepalive_s: float = Field(30.0, ge=0, description=(
        "NOOP on idle control connections this often; 0: off"))
    idle_timeout_s: float = Field(300.0, ge=1, description=(
        "close a control connection idle this long"))
    block_size: int = Field(4 * SFTP_MAX_REQUEST, ge=16384, le=16 << 20, description=(
        "bytes per chunk handed between a transfer's thread and the copy"))
    streams: int = Field(4, ge=1, le=16, description=(
        "parallel ranged streams (REST + RETR, a control connection each, at most "
        "max_connections) for one large download to a destination that takes ranged writes "
        "(local, SFTP), as rclone's multi-thread downloads; 1: one stream (for servers that "
        "limit connections per user below max_connections)"))
    streams_min_size: StreamsMinSize = Field(STREAMS_MIN_SIZE, description=(
        "files at least this large (bytes) may download as parallel streams"))

    @field_validator("cert_sha256")
    @classmethod
    def _pin(cls, value: str) -> str:
        return normalize_cert_sha256(value) if value else ""

    @model_validator(mode="before")
    @classmethod
    def _implicit_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tls") == "implicit" and "port" not in data:
            return {**data, "port": FTPS_IMPLICIT_PORT}
        return data

    @model_validator(mode="after")
    def _check(self) -> FtpVfsConfig:
        if self.tls == "none":
            for key in ("ca_file", "cert_sha256"):
                if getattr(self, key):
                    raise InvalidKey(key, 'only makes sense with TLS (tls = "none" is set)')
        if self.ca_file is not None and self.cert_sha256:
            raise InvalidKey("cert_sha256", "set either ca_file or cert_sha256, not both")
        return self
