"""A durable local spool in front of the fleet's outbox: reports are never lost to a database
outage.

While the shared database cannot be reached, every outbox write (a new intent, a final body, a
void, a release) is appended to a small SQLite file in ``state_dir`` (``synchronous=FULL``:
it survives ``kill -9`` and power loss) instead, and from then on every write goes there, in
order, until a background task has replayed the spool into the database with backoff. A job
that ends while the database is down thus keeps its final report; it is delivered once the
database is back. An intent recorded in the spool gets a negative report id until it is
replayed; the mapping to the database's id is kept in the spool.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from aftd import strictjson
from aftd.dbthread import DbThread, connect, transaction
from aftd.report.store import OutboxRow
from aftd.store.base import OutboxStorage
from aftd.store.errors import StoreUnavailable
from aftd.tasks import cancel_and_wait

__all__ = ["SPOOL_NAME", "SpooledOutbox"]

log = structlog.get_logger("aftd.store")

SPOOL_NAME = "outbox-spool.sqlite"
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    op   TEXT NOT NULL CHECK (op IN ('intent', 'void', 'submit', 'release')),
    ref  INTEGER,
    args TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_ids (
    ref   INTEGER PRIMARY KEY,
    db_id INTEGER NOT NULL
);
"""


class SpooledOutbox:
    """:class:`~aftd.store.base.OutboxStorage`: the database's outbox, spooled locally while the
    database is unavailable; see the module docstring."""

    def __init__(self, inner: OutboxStorage, path: Path) -> None:
        self._inner = inner
        self.path = path
        self._spool = DbThread("aftd-spool")
        self._degraded = False
        self._ids: dict[int, int] = {}
        self._append = asyncio.Lock()
        self._replayer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Told after replayed writes reached the database (the outbox looks for due rows).
        self.on_replayed: Callable[[], None] | None = None

    @property
    def degraded(self) -> bool:
        """True while writes go to the local spool."""
        return self._degraded

    async def open(self) -> None:
        await self._spool.open(self._opener)
        rows = await self._spool.run(lambda c: c.execute(
            "SELECT ref, db_id FROM spool_ids").fetchall())
        self._ids = {int(r[0]): int(r[1]) for r in rows}
        waiting = await self._spool.run(lambda c: c.execute(
            "SELECT COUNT(*) FROM spool").fetchone()[0])
        self._degraded = bool(waiting)
        if waiting:
            log.warning("outbox_spool_found", operations=waiting)
        await self._inner.open()
        self._replayer = asyncio.create_task(self._replay_loop(), name="aftd-outbox-spool")

    def _opener(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, busy_timeout_s=10.0, synchronous="FULL")
        conn.executescript(_SCHEMA)
        return conn

    async def replay_now(self) -> bool:
        """Replay what the spool holds; True when it is empty afterwards."""
        try:
            return await self._replay()
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await cancel_and_wait(self._replayer)
        await self._inner.close()
        await self._spool.close()

    def open_count(self, state: str) -> int:
        return self._inner.open_count(state)

    def delivering(self) -> bool:
        return self._inner.delivering()

    # -- writes: the database, or the spool ----------------------------------------------------
    async def add_intent(self, job_id: str, url: str, token_secret: str | None,
                         failure_body: Mapping[str, Any], key: str, now: float) -> int:
        if not self._degraded:
            try:
                return await self._inner.add_intent(job_id, url, token_secret, failure_body,
                                                    key, now)
            except StoreUnavailable as exc:
                self._degrade(exc)
        args = {"job_id": job_id, "url": url, "token_secret": token_secret,
                "failure_body": dict(failure_body), "key": key, "now": now}
        return -await self._spooled("intent", None, args)

    async def void_intent(self, report_id: int) -> bool:
        if not self._degraded:
            try:
                return await self._inner.void_intent(self._db_id(report_id))
            except StoreUnavailable as exc:
                self._degrade(exc)
        await self._spooled("void", report_id, {})
        return True

    async def submit(self, report_id: int, body: Mapping[str, Any], now: float) -> bool:
        if not self._degraded:
            try:
                return await self._inner.submit(self._db_id(report_id), body, now)
            except StoreUnavailable as exc:
                self._degrade(exc)
        await self._spooled("submit", report_id, {"body": dict(body), "now": now})
        return True

    async def release(self, job_id: str | None, now: float) -> int:
        if not self._degraded:
            try:
                return await self._inner.release(job_id, now)
            except StoreUnavailable as exc:
                self._degrade(exc)
        await self._spooled("release", None, {"job_id": job_id, "now": now})
        return 0

    def _db_id(self, report_id: int) -> int:
        if report_id >= 0:
            return report_id
        if -report_id not in self._ids:  # still in the spool: goes there too
            raise StoreUnavailable("the report's intent is still in the local spool")
        return self._ids[-report_id]

    def _degrade(self, exc: BaseException) -> None:
        if not self._degraded:
            log.warning("outbox_spooling", error=str(exc),
                        note="reports are kept on local disk until the database is back")
        self._degraded = True
        self._wake.set()

    async def _spooled(self, op: str, ref: int | None, args: dict[str, Any]) -> int:
        text = strictjson.dumps(args, sort_keys=True)
        async with self._append:
            self._degraded = True

            def work(c: sqlite3.Connection) -> int:
                with transaction(c):
                    cur = c.execute("INSERT INTO spool (op, ref, args) VALUES (?, ?, ?)",
                                    (op, ref, text))
                return int(cur.lastrowid or 0)
            seq = await self._spool.run(work)
        self._wake.set()
        return seq

    # -- replay ----------------------------------------------------------------------------------
    async def _replay_loop(self) -> None:
        delay = _RETRY_FIRST_S
        while True:
            if not self._degraded:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if await self._replay():
                    delay = _RETRY_FIRST_S
                    continue
            except StoreUnavailable:
                pass
            except Exception:  # a bug must not end replay for good
                log.exception("outbox_spool_error")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _replay(self) -> bool:
        rows = await self._spool.run(lambda c: c.execute(
            "SELECT seq, op, ref, args FROM spool ORDER BY seq LIMIT 100").fetchall())
        for seq, op, ref, args in rows:
            await self._apply(int(seq), str(op), ref, json.loads(args))
            await self._spool.run(functools.partial(_delete, seq=int(seq)))
        if rows:
            if self.on_replayed is not None:
                self.on_replayed()
            return False  # look again: more may have come
        async with self._append:
            left = await self._spool.run(lambda c: c.execute(
                "SELECT COUNT(*) FROM spool").fetchone()[0])
            if left == 0 and self._degraded:
                self._degraded = False
                log.info("outbox_spool_drained")
            return bool(left == 0)

    async def _apply(self, seq: int, op: str, ref: int | None, a: dict[str, Any]) -> None:
        if op == "intent":
            db_id = await self._inner.add_intent(a["job_id"], a["url"], a["token_secret"],
                                                 a["failure_body"], a["key"], a["now"])
            self._ids[seq] = db_id
            await self._spool.run(lambda c: _map(c, seq, db_id))
            return
        if op == "release":
            await self._inner.release(a["job_id"], a["now"])
            return
        assert ref is not None
        target = ref if ref >= 0 else self._ids.get(-ref)
        if target is None:
            log.error("outbox_spool_orphan", op=op, ref=ref)
            return
        done = await self._inner.void_intent(target) if op == "void" else \
            await self._inner.submit(target, a["body"], a["now"])
        if not done:
            log.warning("outbox_spool_fenced", op=op, report_id=target,
                        note="the report was settled meanwhile (released or taken over)")

    # -- reads and delivery bookkeeping: the database only ------------------------------------
    async def due(self, now: float, limit: int) -> list[Any]:
        return await self._inner.due(now, limit)

    async def next_due_after(self, now: float) -> float | None:
        return await self._inner.next_due_after(now)

    async def retry_later(self, report_id: int, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None:
        await self._inner.retry_later(report_id, attempts, status, error, next_at)

    async def finish(self, report_id: int, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        await self._inner.finish(report_id, state, attempts, status, error, now)

    async def retry_now(self, report_id: int, now: float) -> bool:
        return await self._inner.retry_now(self._db_id(report_id), now)

    async def prune(self, before: float) -> int:
        return await self._inner.prune(before)

    async def list_reports(self, states: Sequence[str], limit: int,
                           before_id: int | None = None) -> list[Any]:
        return await self._inner.list_reports(states, limit, before_id)

    async def latest_for_job(self, job_id: str) -> Any:
        return await self._inner.latest_for_job(job_id)

    async def get(self, report_id: int) -> Any:
        if report_id < 0 and -report_id not in self._ids:
            return await self._spooled_row(-report_id)
        try:
            return await self._inner.get(self._db_id(report_id))
        except StoreUnavailable:
            return None

    async def _spooled_row(self, seq: int) -> OutboxRow | None:
        row = await self._spool.run(lambda c: c.execute(
            "SELECT args FROM spool WHERE seq = ? AND op = 'intent'", (seq,)).fetchone())
        if row is None:
            return None
        a = json.loads(row[0])
        return OutboxRow(-seq, a["job_id"], a["url"], a["token_secret"], a["key"], None,
                         "intent", 0, None, None, a["now"], None, None, None)


def _delete(c: sqlite3.Connection, seq: int) -> None:
    with transaction(c):
        c.execute("DELETE FROM spool WHERE seq = ?", (seq,))


def _map(c: sqlite3.Connection, seq: int, db_id: int) -> None:
    with transaction(c):
        c.execute("INSERT OR REPLACE INTO spool_ids (ref, db_id) VALUES (?, ?)", (seq, db_id))
