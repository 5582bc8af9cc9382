"""Notifications as a channel of the outbox's delivery loop (:mod:`aftd.report.delivery`).

Each attempt resolves the URL (``url_secret``) and the signing key (``hmac_secret``) afresh, so
a rotated secret is picked up on retry. The body was fixed when the event happened; the
signature is ``X-Aftd-Signature: sha256=<hex HMAC-SHA256 of the body bytes>``. A secret that
does not exist gives up that notification at once with an error naming the setting and the
secret; other notifications, reports and jobs are not affected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from aftd import __version__
from aftd.errors import SecretError
from aftd.notify.store import NotifyRow, NotifyStore
from aftd.notifyconfig import check_url
from aftd.report.delivery import PreparationError, Request
from aftd.secrets.base import SecretNotFoundError, SecretResolver

__all__ = ["SIGNATURE_HEADER", "NotifyChannel", "sign"]

SIGNATURE_HEADER = "X-Aftd-Signature"


def sign(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


class NotifyChannel:
    kind = "notification"

    def __init__(self, store: NotifyStore, *,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        self._store = store
        # Told (notification name, "delivered" | "retry" | "abandoned"): metrics.
        self._on_outcome = on_outcome

    async def due(self, now: float, limit: int) -> list[NotifyRow]:
        return await self._store.due(now, limit)

    async def next_due_after(self, now: float) -> float | None:
        return await self._store.next_due_after(now)

    async def request(self, row: NotifyRow, secrets: SecretResolver) -> Request:
        data = row.body.encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": row.idempotency_key,
                   "X-Aftd-Event": row.event, "User-Agent": f"aftd/{__version__}"}
        url = row.url
        if row.url_secret:
            url = await _secret(secrets, "url_secret", row.url_secret)
            problem = check_url(url)
            if problem:
                raise PreparationError(f"url_secret {row.url_secret!r} {problem}",
                                       permanent=True)
        if row.hmac_secret:
            headers[SIGNATURE_HEADER] = sign(
                await _secret(secrets, "hmac_secret", row.hmac_secret), data)
        return Request(url, data, headers)

    async def retry_later(self, row: NotifyRow, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None:
        await self._store.retry_later(row.id, attempts, status, error, next_at)

    async def finish(self, row: NotifyRow, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        await self._store.finish(row.id, state, attempts, status, error, now)

    def log_fields(self, row: NotifyRow) -> dict[str, Any]:
        return {"notify": row.notify, "notify_event": row.event, "job_id": row.job_id,
                "notification_id": row.id}

    async def settled(self, row: NotifyRow, outcome: str, error: str | None) -> None:
        if self._on_outcome is not None:
            self._on_outcome(row.notify, outcome)


async def _secret(secrets: SecretResolver, setting: str, name: str) -> str:
    """A secret the request needs; a missing one fails the notification for good, a provider
    that fails (Vault down) is retried."""
    try:
        return await secrets.get(name)
    except SecretNotFoundError as exc:
        raise PreparationError(f"{setting} {name!r}: {exc}", permanent=True) from None
    except SecretError as exc:
        raise PreparationError(f"{setting} {name!r} unavailable: {exc}") from None
