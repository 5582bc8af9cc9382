"""Console sign-in sessions: a random token in a cookie, and only its HMAC kept here.

A session is made by signing in with an API key and is bound to that key's digest: its requests
carry the key's name, scopes and address allow-list as they are configured *now* (a reload that
removes or changes the key ends its sessions). The store is the daemon's memory, keyed by an
HMAC of the token under a key drawn at start-up: a leaked dump of it lets nobody sign in, and a
restart signs every user out (by design: nothing about a session outlives the process). Its size
is bounded by ``[console] max_sessions``; beyond it the session closest to expiry goes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "Session", "SessionStore"]

# "__Host-": browsers accept it only with Secure, Path=/ and no Domain, so no other host or
# path can plant or shadow it.
SESSION_COOKIE = "__Host-aftd_session"
CSRF_HEADER = "X-CSRF-Token"
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class Session:
    key_name: str
    key_sha256: str  # the signing-in key's configured digest: which key this session speaks for
    csrf_token: str  # sent back by the console in CSRF_HEADER on every state-changing request
    created_at: float
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(
            (presented or "").encode(), self.csrf_token.encode())


class SessionStore:
    def __init__(self, ttl_s: float, max_sessions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._hmac_key = secrets.token_bytes(32)
        self._by_mac: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_mac)

    def configure(self, ttl_s: float, max_sessions: int) -> None:
        """New limits (a reload): the TTL applies to sessions made from now on."""
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        self._evict(0)

    def _mac(self, token: str) -> bytes:
        return hmac.new(self._hmac_key, token.encode("utf-8", "replace"), hashlib.sha256).digest()

    def create(self, key_name: str, key_sha256: str) -> tuple[str, Session]:
        """A new session: returns the cookie's token (never stored) and the session."""
        self._evict(1)
        now = self._clock()
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        session = Session(key_name, key_sha256, secrets.token_urlsafe(_TOKEN_BYTES), now,
                          now + self.ttl_s)
        self._by_mac[self._mac(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``, or None (unknown, signed out or expired)."""
        if not token or len(token) > 256:
            return None
        mac = self._mac(token)
        session = self._by_mac.get(mac)
        if session is not None and session.expires_at <= self._clock():
            del self._by_mac[mac]
            return None
        return session

    def drop(self, token: str | None) -> bool:
        """Sign out: True if there was such a session."""
        if not token:
            return False
        return self._by_mac.pop(self._mac(token), None) is not None

    def _evict(self, room: int) -> None:
        now = self._clock()
        for mac in [m for m, s in self._by_mac.items() if s.expires_at <= now]:
            del self._by_mac[mac]
        excess = len(self._by_mac) + room - self.max_sessions
        if excess > 0:
            oldest = sorted(self._by_mac, key=lambda m: self._by_mac[m].expires_at)[:excess]
            for mac in oldest:
                del self._by_mac[mac]
