"""``vault`` provider: KV v2 on HashiCorp Vault or OpenBao through hvac.

hvac is synchronous, so every call runs in a worker thread (bounded by ``max_parallel``).
Logging in happens lazily at the first lookup (or in :meth:`VaultProvider.start`); after a
login that yields an expiring token a background task renews it once ``renew_fraction`` of its
TTL has passed, and logs in again when renewal fails or the token cannot be extended further.
A lookup that gets 401/403 logs in again once and retries, so an expired or revoked token heals
without waiting for the renewer.

Every failure becomes a :class:`SecretError` built from safe parts only (the secret's name, the
server URL, the exception type and the server's error strings scrubbed of known secrets): hvac
and requests exceptions can carry response bodies and are never passed on as they are.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import structlog

from aftd import executors, redact
from aftd.errors import SecretError
from aftd.secrets.base import SecretName, field_value
from aftd.secrets.config import VaultConfig

__all__ = ["VaultProvider", "VaultStats"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0


class _AuthFailed(Exception):
    """Vault refused the token (401/403); the caller may log in again and retry."""


@dataclass
class VaultStats:
    """Counters for tests and metrics."""

    reads: int = 0
    logins: int = 0
    renewals: int = 0
    renew_failures: int = 0


class VaultProvider:
    name = "vault"

    def __init__(self, cfg: VaultConfig) -> None:
        self.cfg = cfg
        self.stats = VaultStats()
        self._client = _make_client(cfg)
        self._login_lock = asyncio.Lock()
        self._limit = asyncio.Semaphore(cfg.max_parallel)
        self._generation = 0  # bumped at every login; 0 = never logged in
        self._ttl = 0.0  # seconds the current token lived at its last login/renewal; 0 = forever
        self._renewable = False
        self._stamp = 0.0  # monotonic time of the last login/renewal
        self._renewer: asyncio.Task[None] | None = None
        # The current token's accessor: not a credential (it cannot read secrets), but lets an
        # operator or a test look up / revoke the token the daemon holds.
        self.accessor = ""

    def __repr__(self) -> str:
        return f"VaultProvider(url={self.cfg.url!r}, auth={self.cfg.auth!r})"

    # -- public ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in now (instead of at the first lookup) and start the renewer."""
        await self._ensure_login()

    async def lookup(self, name: SecretName) -> str | None:
        await self._ensure_login()
        generation = self._generation
        try:
            data = await self._read(name)
        except _AuthFailed:
            await self._relogin(generation, reason="token refused")
            try:
                data = await self._read(name)
            except _AuthFailed:
                raise SecretError(f"secret {str(name)!r}: vault at {self.cfg.url} denied access "
                                  f"to {self._path(name)} (check the policy)") from None
        if data is None:
            return None
        return field_value(name, f"vault {self._path(name)}", data)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        await executors.run(executors.SECRETS, self._client.adapter.close)
        if self._client.token:
            redact.release(self._client.token)

    # -- reading ----------------------------------------------------------------------------

    def where(self, name: SecretName) -> str:
        return self._path(name)

    def _path(self, name: SecretName) -> str:
        return f"{self.cfg.mount}/{self.cfg.prefix}{name.path}"

    async def _read(self, name: SecretName) -> dict[str, Any] | None:
        self.stats.reads += 1
        path = f"{self.cfg.prefix}{name.path}"
        try:
            resp = await self._call(f"reading secret {str(name)!r}", self._read_sync, path)
        except _NotFound:
            return None
        data = resp.get("data", {}).get("data") if isinstance(resp, dict) else None
        return data if isinstance(data, dict) else None

    def _read_sync(self, path: str) -> Any:
        try:
            return self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.cfg.mount, raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            raise _NotFound from None

    # -- login and renewal ------------------------------------------------------------------

    async def _ensure_login(self) -> None:
        if self._generation == 0:
            await self._relogin(0, reason="first use")

    async def _relogin(self, seen_generation: int, *, reason: str) -> None:
        """Log in unless someone else already did since ``seen_generation`` was read."""
        async with self._login_lock:
            if self._generation != seen_generation:
                return
            try:
                await self._call("logging in", self._login_sync)
            except _AuthFailed:
                raise SecretError(f"vault at {self.cfg.url} refused the {self.cfg.auth} login "
                                  "(check the credentials)") from None
            info = await self._call("looking up the token", self._client.auth.token.lookup_self)
            self._set_token_info(info.get("data", {}))
            self._generation += 1
            self.stats.logins += 1
            log.info("vault_login", url=self.cfg.url, auth=self.cfg.auth, reason=reason,
                     ttl_s=self._ttl, renewable=self._renewable)
        self._ensure_renewer()

    def _login_sync(self) -> None:
        previous = self._client.token
        self._login_with_credentials()
        # The token is held until the next login: masked for as long, whatever its age.
        if self._client.token:
            redact.pin(self._client.token)
        if previous:
            redact.release(previous)

    def _login_with_credentials(self) -> None:
        if self.cfg.auth == "approle":
            role_file, secret_file = self.cfg.role_id_file, self.cfg.secret_id_file
            if role_file is None or secret_file is None:  # config parsing requires both
                raise SecretError("approle auth needs role_id_file and secret_id_file")
            role_id = _read_credential(role_file, "role_id_file")
            secret_id = _read_credential(secret_file, "secret_id_file")
            redact.register(secret_id)
            self._client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                            mount_point=self.cfg.approle_mount)
        else:
            self._client.token = self._token_from_config()

    def _token_from_config(self) -> str:
        if self.cfg.token_file is not None:
            return _read_credential(self.cfg.token_file, "token_file")
        token = os.environ.get("VAULT_TOKEN", "").strip()
        if not token:
            raise SecretError("vault auth is \"token\" but neither secrets.vault.token_file "
                              "nor the VAULT_TOKEN environment variable is set")
        return token

    def _set_token_info(self, data: dict[str, Any]) -> None:
        self.accessor = str(data.get("accessor") or "")
        self._ttl = float(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._stamp = time.monotonic()

    def _ensure_renewer(self) -> None:
        if not self.cfg.renew or self._ttl <= 0:
            return
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="aftd-vault-renew")

    async def _renew_loop(self) -> None:
        """Keep the token alive; never raises (a dead renewer must not go unnoticed silently)."""
        backoff = _RETRY_MIN_S
        while self._ttl > 0:
            due = self._stamp + self._ttl * self.cfg.renew_fraction
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                await self._renew_or_relogin()
                backoff = _RETRY_MIN_S
            except Exception as exc:  # logged; retried with backoff
                self.stats.renew_failures += 1
                log.warning("vault_token_refresh_failed", url=self.cfg.url,
                            error=redact.scrub(str(exc)) if isinstance(exc, SecretError)
                            else type(exc).__name__, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)

    async def _renew_or_relogin(self) -> None:
        generation = self._generation
        if self._renewable and await self._try_renew():
            return
        await self._relogin(generation, reason="renewal failed or token not renewable")

    async def _try_renew(self) -> bool:
        """Renew; ``False`` when the token is refused or cannot be extended any further."""
        remaining = self._stamp + self._ttl - time.monotonic()
        increment = self.cfg.renew_increment_s or None
        try:
            resp = await self._call("renewing the token", self._client.auth.token.renew_self,
                                    increment=increment)
        except _AuthFailed:
            self.stats.renew_failures += 1
            log.warning("vault_renew_refused", url=self.cfg.url)
            return False
        auth = resp.get("auth", {}) if isinstance(resp, dict) else {}
        new_ttl = float(auth.get("lease_duration") or 0)
        if new_ttl <= max(remaining, 0.0) + 1:
            # Hit the token's max TTL: renewing gains nothing, a fresh login is needed.
            log.info("vault_token_at_max_ttl", url=self.cfg.url, ttl_s=new_ttl)
            return False
        self._ttl, self._stamp = new_ttl, time.monotonic()
        self.stats.renewals += 1
        log.debug("vault_token_renewed", url=self.cfg.url, ttl_s=new_ttl)
        return True

    # -- calling hvac -------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking hvac call in a thread and translate its exceptions into safe ones."""
        async with self._limit:
            try:
                call = functools.partial(fn, *args, **kwargs)
                return await executors.run(executors.SECRETS, call)
            except (_NotFound, SecretError):
                raise
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                raise _AuthFailed from None
            except Exception as exc:  # anything else is an outage for the caller
                raise SecretError(self._describe(what, exc)) from None

    def _describe(self, what: str, exc: Exception) -> str:
        if isinstance(exc, requests.exceptions.RequestException):
            detail = f"unreachable ({type(exc).__name__})"
        elif isinstance(exc, hvac.exceptions.VaultError):
            # Scrubbed before it is cut: a cut secret would no longer match.
            errors = redact.scrub("; ".join(str(e) for e in (exc.errors or [])))[:200]
            detail = f"failed ({type(exc).__name__}: {errors or 'no detail'})"
        elif isinstance(exc, OSError):
            detail = f"failed ({exc.strerror or type(exc).__name__})"
        else:
            detail = f"failed ({type(exc).__name__})"
        return f"vault at {self.cfg.url} {detail} while {what}"


class _NotFound(Exception):
    pass


def _read_credential(path: os.PathLike[str], key: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise SecretError(f"secrets.vault.{key} {os.fspath(path)}: cannot read: "
                          f"{exc.strerror or type(exc).__name__}") from None
    if not value:
        raise SecretError(f"secrets.vault.{key} {os.fspath(path)} is empty")
    return value


def _make_client(cfg: VaultConfig) -> hvac.Client:
    verify: bool | str = str(cfg.ca_file) if cfg.ca_file else cfg.verify
    cert = (str(cfg.client_cert), str(cfg.client_key)) if cfg.client_cert else None
    # token="" keeps hvac from reading VAULT_TOKEN/~/.vault-token behind our back;
    # no redirects so the token header is never sent to another host.
    return hvac.Client(url=cfg.url, token="", verify=verify, cert=cert, timeout=cfg.timeout_s,
                       namespace=cfg.namespace or None, allow_redirects=False)
