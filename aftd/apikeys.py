"""API keys: generation, hashing and constant-time lookup. Keys are only ever stored hashed.

The one exception is the key generated at the first start without ``[[auth.api_keys]]``: it is
handed over once, on the terminal when there is one, else in ``state_dir/initial-api-key``
(mode 0600) for the operator to read and delete. It never goes to the log, which under systemd
is the journal that many may read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog

from aftd.authconfig import LOOPBACK, ApiKeyConfig

__all__ = ["GENERATED_KEY_FILE", "INITIAL_KEY_FILE", "AuthResult", "KeyRing", "digest",
           "generate_key", "hand_over_initial_key", "load_or_create_generated"]

log = structlog.get_logger("aftd.apikeys")

GENERATED_KEY_FILE = "api_key.sha256"
INITIAL_KEY_FILE = "initial-api-key"


def generate_key() -> str:
    return "aft_" + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_or_create_generated(state_dir: Path) -> tuple[ApiKeyConfig, str | None]:
    """The key used when none is configured: created once, only its digest kept on disk.

    Returns the key config and, on the first start only, the clear key to print once.
    """
    path = state_dir / GENERATED_KEY_FILE
    if path.is_file():
        stored = path.read_text().strip()
        return ApiKeyConfig(name="generated", sha256=stored, allow_from=LOOPBACK), None
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(digest(key) + "\n")
    return ApiKeyConfig(name="generated", sha256=digest(key), allow_from=LOOPBACK), key


def hand_over_initial_key(state_dir: Path, key: str, out: TextIO) -> Path | None:
    """Show a freshly generated ``key`` once: on ``out`` if it is an interactive terminal,
    else in ``state_dir/initial-api-key`` (mode 0600). Returns the file written, if any."""
    if out.isatty():
        print(f"aftd: generated API key (shown once; only its SHA-256 is stored): {key}",
              file=out, flush=True)
        log.info("api_key_generated", shown_on="terminal")
        return None
    path = state_dir / INITIAL_KEY_FILE
    _write_private(path, key + "\n")
    log.warning("api_key_generated", path=str(path),
                hint="read the key from this file, then delete the file")
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    def by_digest(self, sha256: str, remote: str | None) -> AuthResult:
        """The configured key with this digest (a console session's key), as configured now."""
        for key in self._keys:
            if hmac.compare_digest(sha256, key.sha256):
                return AuthResult(key, _address_allowed(remote, key))
        return AuthResult(None, False)


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
