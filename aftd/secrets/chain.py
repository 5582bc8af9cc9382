"""The provider chain: resolve a secret name through ``[secrets] order``.

* The first provider that holds the name wins. A provider that *fails* (Vault down, a secrets
  file with a bad mode) stops the chain with a :class:`SecretError`: falling through to a
  later provider could silently hand out a stale or different value.
* Values are cached for ``cache_ttl_s`` so a rotation is seen by later jobs without a restart;
  concurrent lookups of one name share one provider request (single-flight).
* Every value is registered with :mod:`aftd.redact` (which masks its escaped forms too) before
  any caller sees it, and again at every later resolution, cache hits included: the redactor
  drops values that have not been resolved for ``mask_ttl_s``, so its set stays bounded.

Providers are built at the first use or in :meth:`SecretChain.start`, which the daemon should
call at start-up: it refuses a badly protected secrets file at once and logs in to Vault
early (a Vault outage there is only logged; lookups retry later). The Vault token renewer is a
background task started after the first login, whichever of the two triggers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from aftd import redact
from aftd.errors import SecretError
from aftd.secrets.base import Provider, SecretName, SecretNotFoundError, parse_name
from aftd.secrets.config import SecretsConfig

__all__ = ["LookupObserver", "SecretChain", "build_providers", "register_value"]

log = structlog.get_logger(__name__)
# Called after every get/which with (secret name, provider that answered or None on failure);
# the daemon points it at its Prometheus counters.
LookupObserver = Callable[[str, "str | None"], None]
_CACHE_SWEEP_AT = 1024


@dataclass(frozen=True)
class _Entry:
    value: str
    provider: str
    expires: float

    def __repr__(self) -> str:
        return f"_Entry(provider={self.provider!r}, value=<redacted>)"


def register_value(value: str) -> None:
    """Make :func:`aftd.redact.scrub` mask ``value`` (in every form it is likely to appear in)
    and restart its age in the redactor."""
    redact.register(value)


def build_providers(cfg: SecretsConfig) -> list[Provider]:
    """Instantiate the providers of ``cfg.order`` (imports hvac only when Vault is used)."""
    providers: list[Provider] = []
    for name in cfg.order:
        if name == "vault":
            if cfg.vault is None:
                raise SecretError("secrets order names vault but [secrets.vault] is missing")
            from aftd.secrets.vault import VaultProvider
            providers.append(VaultProvider(cfg.vault))
        elif name == "file":
            if cfg.file is None:
                raise SecretError("secrets order names file but [secrets.file] is missing")
            from aftd.secrets.file import FileProvider
            providers.append(FileProvider(cfg.file.path))
        elif name == "env":
            from aftd.secrets.env import EnvProvider
            providers.append(EnvProvider())
        else:
            raise SecretError(f"unknown secret provider {name!r}")
    return providers


class SecretChain:
    """Resolve secret names; one instance per daemon, shared by all jobs."""

    def __init__(self, cfg: SecretsConfig, *, providers: Sequence[Provider] | None = None,
                 on_lookup: LookupObserver | None = None) -> None:
        self.cfg = cfg
        self.on_lookup = on_lookup
        self._providers = list(providers) if providers is not None else None
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"SecretChain(order={list(self.cfg.order)!r}, cache_ttl_s={self.cfg.cache_ttl_s})"

    @property
    def providers(self) -> list[Provider]:
        if self._providers is None:
            self._providers = build_providers(self.cfg)
        return self._providers

    async def start(self) -> None:
        """Apply the mask bounds, build the providers (raises :class:`SecretError` on a refused
        secrets file) and log in to Vault early; a Vault login failure is logged, not raised."""
        redact.configure(max_age_s=self.cfg.mask_ttl_s, max_values=self.cfg.mask_max_values)
        for provider in self.providers:
            start = getattr(provider, "start", None)
            if start is None:
                continue
            try:
                await start()
            except SecretError as exc:
                log.warning("secret_provider_start_failed", provider=provider.name,
                            error=redact.scrub(str(exc)))

    async def get(self, name: str) -> str:
        """The value of ``name`` (``name#field`` selects a field); :class:`SecretError` if it
        cannot be resolved."""
        return (await self._resolve(name)).value

    async def which(self, name: str) -> str | None:
        """The provider that resolves ``name``, or ``None`` if none holds it.

        A failing provider still raises :class:`SecretError` (the answer would be a guess).
        """
        try:
            return (await self._resolve(name)).provider
        except SecretNotFoundError:
            return None

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._inflight.values()):
            task.cancel()
        self._cache.clear()
        for provider in self._providers or []:
            try:
                await provider.aclose()
            except Exception as exc:  # closing must not stop the other providers
                log.warning("secret_provider_close_failed", provider=provider.name,
                            error=type(exc).__name__)

    # -- internals ------------------------------------------------------------------------

    async def _resolve(self, name: str) -> _Entry:
        try:
            entry = await self._resolve_once(name)
        except SecretError:
            self._observe(name, None)
            raise
        self._observe(name, entry.provider)
        return entry

    def _observe(self, name: str, provider: str | None) -> None:
        if self.on_lookup is None:
            return
        try:
            self.on_lookup(name, provider)
        except Exception as exc:  # a metrics hook must never fail a lookup
            log.warning("secret_observer_failed", error=type(exc).__name__)

    async def _resolve_once(self, name: str) -> _Entry:
        if self._closed:
            raise SecretError(f"secret {name!r}: the secret chain is closed")
        parsed = parse_name(name)
        key = str(parsed)
        entry = self._cache.get(key)
        if entry is not None and entry.expires > time.monotonic():
            register_value(entry.value)  # still in use: keep it masked
            return entry
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(parsed, key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shield: a cancelled waiter must not cancel the lookup the others are waiting for.
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have been cancelled

    async def _fetch(self, name: SecretName, key: str) -> _Entry:
        tried: list[str] = []
        for provider in self.providers:
            tried.append(f"{provider.name} ({provider.where(name)})")
            value = await self._lookup_one(provider, name, key)
            if value is None:
                continue
            register_value(value)
            entry = _Entry(value, provider.name, time.monotonic() + self.cfg.cache_ttl_s)
            self._remember(key, entry)
            log.debug("secret_resolved", secret=key, provider=provider.name)
            return entry
        raise SecretNotFoundError(f"secret {key!r} not found; tried {', '.join(tried) or 'none'}")

    async def _lookup_one(self, provider: Provider, name: SecretName, key: str) -> str | None:
        try:
            return await provider.lookup(name)
        except SecretError as exc:
            msg = redact.scrub(str(exc))
        except Exception as exc:  # a provider bug must not leak text or crash jobs
            msg = f"unexpected {type(exc).__name__}"
        log.warning("secret_lookup_failed", secret=key, provider=provider.name, error=msg)
        raise SecretError(f"secret {key!r}: provider {provider.name} failed: {msg}")

    def _remember(self, key: str, entry: _Entry) -> None:
        if self.cfg.cache_ttl_s <= 0:
            return
        if len(self._cache) >= _CACHE_SWEEP_AT:
            now = time.monotonic()
            self._cache = {k: e for k, e in self._cache.items() if e.expires > now}
        self._cache[key] = entry
