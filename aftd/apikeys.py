"""API keys: generation, hashing and constant-time lookup. Keys are only ever stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aftd.config import LOOPBACK, ApiKeyConfig

__all__ = ["GENERATED_KEY_FILE", "AuthResult", "KeyRing", "digest", "generate_key",
           "load_or_create_generated"]

GENERATED_KEY_FILE = "api_key.sha256"


def generate_key() -> str:
    return "aft_" + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_or_create_generated(state_dir: Path) -> tuple[ApiKeyConfig, str | None]:
    """The key used when none is configured: created once, only its digest kept on disk.

    Returns the key config and, on the first start only, the clear key to print once.
    """
    path = state_dir / GENERATED_KEY_FILE
    nets = tuple(ipaddress.ip_network(n) for n in LOOPBACK)
    if path.is_file():
        return ApiKeyConfig("generated", path.read_text().strip(), nets), None
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(digest(key) + "\n")
    return ApiKeyConfig("generated", digest(key), nets), key


@dataclass(frozen=True)
class AuthResult:
    key: ApiKeyConfig | None
    allowed: bool


class KeyRing:
    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._keys = tuple(keys)

    def authenticate(self, presented: str | None, remote: str | None) -> AuthResult:
        """Match a presented key against every stored digest (constant time each)."""
        if not presented:
            return AuthResult(None, False)
        candidate = digest(presented)
        match = None
        for key in self._keys:
            # Compare against every key so timing does not tell which one matched.
            if hmac.compare_digest(candidate, key.sha256):
                match = key
        if match is None:
            return AuthResult(None, False)
        return AuthResult(match, _address_allowed(remote, match))


def _address_allowed(remote: str | None, key: ApiKeyConfig) -> bool:
    if remote is None:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in key.allow_from)
