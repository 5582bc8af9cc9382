"""``[server]``: the HTTPS listener and the limits that keep a client from holding memory or
connections."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import ConfigModel, InvalidKey, OptionalPath, from_file

__all__ = ["DEFAULT_LISTEN", "ServerConfig", "split_listen"]

DEFAULT_LISTEN = "127.0.0.1:44399"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"must be HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


class ServerConfig(ConfigModel):
    """The HTTPS listener and the limits that keep a client from holding memory or connections
    (README, "Limits")."""

    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT (or [V6]:PORT) to listen on")
    tls_cert: OptionalPath = Field(
        None, description="PEM certificate; empty: a self-signed one is generated in state_dir",
        examples=["/etc/aftd/tls/cert.pem"])
    tls_key: OptionalPath = Field(None, description="PEM private key of tls_cert",
                                  examples=["/etc/aftd/tls/key.pem"])
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30,
                                description="larger request bodies get 413")
    max_params_bytes: int = Field(
        64 << 10, ge=64, description="a trigger's params as compact UTF-8 JSON; more gets 413 "
        "(default: 65536, at most max_body_bytes)")
    max_page_bytes: int = Field(1 << 20, ge=4096, le=1 << 30, description=(
        "a page of GET /v1/jobs or .../log stops before this size"))
    header_timeout_s: float = Field(10.0, ge=0.1, le=3600, description=(
        "the TLS handshake and the request headers must arrive within this"))
    body_timeout_s: float = Field(30.0, ge=0.1, le=3600, description=(
        "a request body must arrive within this (408); a log follower that stops reading this "
        "long is disconnected"))
    keepalive_timeout_s: float = Field(15.0, ge=0.1, le=3600, description=(
        "an idle keep-alive connection is closed after this"))
    max_connections: int = Field(256, ge=1, le=1_000_000, description=(
        "open connections (handshakes included); more are refused"))
    public_url: str = Field("", description=(
        "the daemon's address as users reach it, for links to the console in notifications "
        "(default: https://HOST:PORT of listen)"), examples=["https://transfer-1.example.net:44399"])

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def base_url(self) -> str:
        """``public_url``, or ``https://HOST:PORT`` of ``listen`` (the machine's name when it
        listens on every address)."""
        if self.public_url:
            return self.public_url
        host = self.host
        if ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_unspecified:
            host = socket.getfqdn()
        return f"https://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if not from_file() and ("host" in data or "port" in data):
            # Python callers (tools, tests) may give host/port; TOML has `listen` only.
            data = dict(data)
            host, port = data.pop("host", "127.0.0.1"), data.pop("port", 44399)
            data["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        body = data.get("max_body_bytes")
        if "max_params_bytes" not in data and isinstance(body, int) and not isinstance(body, bool):
            data = {**data, "max_params_bytes": min(64 << 10, body)}
        return data

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment, like "
                             f"https://transfer-1.example.net:44399; got {value[:200]!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidKey("tls_key" if self.tls_key is None else "tls_cert",
                             "tls_cert and tls_key must be set together")
        if self.max_params_bytes > self.max_body_bytes:
            raise InvalidKey("max_params_bytes", f"must be <= server.max_body_bytes "
                             f"({self.max_body_bytes}): params arrive inside the request body")
        return self
