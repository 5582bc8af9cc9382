"""``type = "sftp"``: a directory on an SSH server (asyncssh is imported by the backend only)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, Strict, ValidationInfo, field_validator, model_validator

from aftd.configmodel import InvalidKey
from aftd.vfs.config import STREAMS_MIN_SIZE, ConnectTimeoutS, StreamsMinSize, VfsConfig

__all__ = ["DEFAULT_CIPHERS", "SFTP_MAX_REQUEST", "SftpVfsConfig"]

# AES-GCM runs inside OpenSSL (through `cryptography`) and costs asyncssh about half the CPU of
# chacha20-poly1305, OpenSSH's default; see PERF.md.
DEFAULT_CIPHERS = (
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes256-ctr",
)
# OpenSSH's sftp-server advertises this maximum; asking for 256 KiB kills the session.
SFTP_MAX_REQUEST = 261_120
def _auto_or_int(low: int, high: int) -> dict[str, JsonValue]:
    """The JSON schema of an ``"auto"``-or-a-count key (the union pydantic derives is vaguer)."""
    return {"anyOf": [{"type": "integer", "minimum": low, "maximum": high},
                      {"const": "auto", "type": "string"}]}


_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")


class SftpVfsConfig(VfsConfig):
    """A directory on an SSH server, over SFTP; the server's key is always checked."""

    EXAMPLE: ClassVar[dict[str, object]] = {
        "name": "partner", "root": "/outbound", "key_secret": "partner-ssh-key",
        "known_hosts": "/etc/aftd/known_hosts"}

    type: Literal["sftp"] = Field(description="the backend; decides the other keys")
    root: str = Field("", description="the directory on the server; empty: the login directory",
                      examples=["/outbound"])
    host: str = Field(min_length=1, description="the server", examples=["sftp.example.net"])
    port: int = Field(22, ge=1, le=65535, description="its SSH port")
    user: str = Field(min_length=1, description="the login", examples=["transfer"])
    key_secret: str = Field("", description="the secret holding the private key (OpenSSH "
                            "format); or password_secret", examples=["partner-ssh-key"])
    password_secret: str = Field("", description="the secret holding the password; or "
                                 "key_secret", examples=["partner-password"])
    passphrase_secret: str = Field("", description="the secret holding the key's passphrase, "
                                   "if it has one", examples=["partner-key-passphrase"])
    known_hosts: str = Field("", description="an OpenSSH known_hosts file with the server's "
                             "key; or host_key_sha256", examples=["/etc/aftd/known_hosts"])
    host_key_sha256: str = Field("", description="the server key's fingerprint as `ssh-keygen "
                                 "-lf KEY` prints it (SHA256:...); or known_hosts",
                                 examples=["SHA256:" + "A" * 43])
    max_connections: int = Field(4, ge=1, le=64, description="SSH connections to the server")
    max_sessions: int = Field(4, ge=1, le=64, description="SFTP sessions per connection")
    keepalive_s: float = Field(30.0, ge=0, description="SSH keepalive interval; 0: off")
    connect_timeout_s: ConnectTimeoutS = Field(15.0, description="connect and log in within "
                                               "this")
    ciphers: Annotated[tuple[str, ...], Strict(False)] = Field(
        DEFAULT_CIPHERS, min_length=1, description="SSH ciphers to offer, preferred first")
    block_size: int = Field(SFTP_MAX_REQUEST, ge=4096, le=SFTP_MAX_REQUEST, description=(
        "bytes per SFTP read or write request"))
    requests_in_flight: int | Literal["auto"] = Field(
        "auto", json_schema_extra=_auto_or_int(1, 256), description=(
            "SFTP requests outstanding per stream; \"auto\": the bandwidth-delay product at "
            "the measured round trip, 16 to 64"))
    streams: int | Literal["auto"] = Field(
        "auto", json_schema_extra=_auto_or_int(1, 64), description=(
            "parallel ranged streams (separate SFTP channels) for one large file; \"auto\": "
            "from the measured round trip, 1 on a LAN, up to 8"))
    streams_min_size: StreamsMinSize = Field(STREAMS_MIN_SIZE, description=(
        "files at least this large (bytes) may move as parallel streams"))
    max_files_in_flight: int = Field(64, ge=1, le=1024, description=(
        "files a tree copy with transfers=\"auto\" (the default) may keep in flight to or "
        "from this server: it starts at 4 and doubles while throughput rises, up to this; "
        "they share the pool's sessions"))
    sha256sum_command: str = Field("sha256sum", pattern=r"^[^\n\r\x00]*$", description=(
        "the command that hashes a stored file on the server for verify=\"sha256\" (run "
        "over an SSH exec channel as `COMMAND -- PATH`); empty: read the file back instead"))

    @field_validator("requests_in_flight", "streams", mode="before")
    @classmethod
    def _auto_or_count(cls, value: object, info: ValidationInfo) -> object:
        top = 256 if info.field_name == "requests_in_flight" else 64
        if value == "auto" or (type(value) is int and 1 <= value <= top):
            return value
        raise ValueError(f'must be "auto" or a whole number from 1 to {top}, got {value!r}')

    @field_validator("host_key_sha256")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        if value and not _FINGERPRINT.match(value):
            raise ValueError("must look like 'SHA256:...' as printed by `ssh-keygen -lf KEY`")
        return value

    @model_validator(mode="after")
    def _check(self) -> SftpVfsConfig:
        _one_of(self, "key_secret", "password_secret")
        if self.passphrase_secret and not self.key_secret:
            raise InvalidKey("passphrase_secret", "only makes sense with key_secret")
        _one_of(self, "known_hosts", "host_key_sha256")
        return self


def _one_of(cfg: SftpVfsConfig, a: str, b: str) -> None:
    if bool(getattr(cfg, a)) == bool(getattr(cfg, b)):
        raise InvalidKey(a, f"exactly one of {a} or {b} is required")
