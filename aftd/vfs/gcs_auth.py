"""OAuth access tokens for Google Cloud Storage from a service-account key (the JSON file Google
issues), by the JWT-bearer grant: a JWT signed with the account's private key (PyJWT, RS256) is
exchanged at the key's ``token_uri`` for a bearer token, cached until shortly before it expires.

Not gcloud-aio-auth's ``Token``: given a key it cannot parse it silently falls back to the GCE
metadata server, and it retries a refused key for minutes; here a malformed key is an error
naming the secret at once, and a refused one an error naming the VFS. Neither ever shows the
key: messages name fields and the secret, not values.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aftd.errors import TransferError

__all__ = ["SCOPE", "ServiceAccount", "TokenSource", "parse_service_account"]

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_LIFETIME_S = 3600
_REFRESH_BEFORE_S = 300  # renew this long before the token expires
_REQUIRED = ("client_email", "private_key", "token_uri")


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a service-account key the token exchange uses."""

    client_email: str
    token_uri: str
    private_key: rsa.RSAPrivateKey = field(repr=False)  # loaded, never shown
    key_id: str = field(default="", repr=False)


def parse_service_account(text: str, *, vfs: str, secret: str) -> ServiceAccount:
    """Parse and check a service-account key; errors name the secret and the field, never the
    value (a key pasted in the wrong place must not end up in a log)."""
    where = f"vfs {vfs!r}: credentials_secret {secret!r}"
    try:
        data = json.loads(text)
    except ValueError:
        raise TransferError(f"{where} is not JSON (expected a service-account key file)",
                            vfs=vfs) from None
    if not isinstance(data, Mapping):
        raise TransferError(f"{where} is not a JSON object (expected a service-account key)",
                            vfs=vfs)
    if data.get("type") != "service_account":
        raise TransferError(f"{where}: 'type' must be \"service_account\"", vfs=vfs)
    missing = [k for k in _REQUIRED if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise TransferError(f"{where}: missing or empty field(s) {', '.join(missing)}", vfs=vfs)
    try:
        # Without the RSA consistency check (75 ms of CPU per parse on this VM, paid by every
        # process that connects): the key only signs our own token requests, which Google
        # refuses if it is inconsistent; anything that is not a PEM RSA key still fails here.
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TransferError(f"{where}: 'private_key' is not a PEM RSA private key", vfs=vfs)
    return ServiceAccount(data["client_email"], data["token_uri"], key,
                          str(data.get("private_key_id") or ""))


class TokenSource:
    """Bearer tokens for one service account, fetched on first use and renewed before expiry.

    Concurrent callers share one exchange. A refused key raises :class:`TransferError` naming
    the VFS and the server's error code (``invalid_grant``...), not the key.
    """

    def __init__(self, account: ServiceAccount, *, vfs: str, timeout_s: float = 30.0) -> None:
        self.account = account
        self.vfs = vfs
        self.timeout_s = timeout_s
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, session: aiohttp.ClientSession) -> str:
        if self._token and time.time() < self._renew_at:
            return self._token
        async with self._lock:
            if not self._token or time.time() >= self._renew_at:
                self._token, lifetime = await self._exchange(session)
                self._renew_at = time.time() + max(lifetime - _REFRESH_BEFORE_S, lifetime / 2)
        return self._token

    def forget(self) -> None:
        """Drop the cached token (the server refused it): the next call fetches a new one."""
        self._token = ""

    def assertion(self, now: float | None = None) -> str:
        """The signed JWT the token endpoint exchanges for an access token."""
        issued = int(now if now is not None else time.time())
        claims = {"iss": self.account.client_email, "scope": SCOPE,
                  "aud": self.account.token_uri, "iat": issued, "exp": issued + _LIFETIME_S}
        headers = {"kid": self.account.key_id} if self.account.key_id else None
        return jwt.encode(claims, self.account.private_key, algorithm="RS256", headers=headers)

    async def _exchange(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        form = {"grant_type": _GRANT, "assertion": self.assertion()}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with session.post(self.account.token_uri, data=form, timeout=timeout) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransferError(f"vfs {self.vfs!r}: cannot reach the token endpoint "
                                f"{self.account.token_uri}: {type(exc).__name__}",
                                vfs=self.vfs) from None
        return self._parse(status, body)

    def _parse(self, status: int, body: bytes) -> tuple[str, float]:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        token = data.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            code = data.get("error") if isinstance(data.get("error"), str) else f"HTTP {status}"
            raise TransferError(f"vfs {self.vfs!r}: the service account "
                                f"{self.account.client_email!r} was refused a token ({code}): "
                                "check credentials_secret", vfs=self.vfs)
        lifetime = data.get("expires_in", _LIFETIME_S)
        return token, float(lifetime) if isinstance(lifetime, int | float) else _LIFETIME_S
