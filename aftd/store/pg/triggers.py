"""The trigger store in PostgreSQL (:class:`aftd.triggers.store.TriggerStore`), shared by the
fleet: a fire is claimed by ``INSERT ... ON CONFLICT DO NOTHING``, so whichever host inserts a
due time or a file version first submits its job, and every other host finds it claimed. A
schedule or a watch thus fires once for the whole fleet. Rows and states are those of the
SQLite store (see :mod:`aftd.triggers.store`); fire keys and paths are stored as bytes
(:func:`_b`), as a key holds NUL characters and a file name may not be UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, overload

import asyncpg

from aftd.store.pg.db import Db
from aftd.triggers.store import CLAIM_BATCH, Fire, TriggerRecord

__all__ = ["PgTriggerStore"]

_COLS = ("trigger, fire_key, kind, script, params, path, size, mtime, due_at, attempt, state, "
         "job_id, error, claimed_at, updated_at")
_FINISHED = "('done', 'failed', 'skipped')"

# One statement claims a batch: the rows come in as parallel arrays.
_CLAIM = (
    "INSERT INTO trigger_fires (trigger, fire_key, kind, script, params, path, size, mtime,"
    " due_at, attempt, state, job_id, idem_key, error, claimed_at, updated_at)"
    " SELECT t, k, kd, s, p, pa, sz, mt, du, at, st, j, ik, e, $15, $15 FROM unnest("
    "$1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bigint[],"
    " $8::float8[], $9::float8[], $10::int[], $11::text[], $12::text[], $13::text[],"
    " $14::text[]) AS f(t, k, kd, s, p, pa, sz, mt, du, at, st, j, ik, e)"
    " ON CONFLICT (trigger, fire_key) DO NOTHING RETURNING trigger, fire_key")
# A claimed watch fire makes the finished rows of its file's older versions history.
_REPLACED = (
    "DELETE FROM trigger_fires f USING unnest($1::text[], $2::bytea[], $3::bytea[])"  # noqa: S608
    " AS w(t, pa, k) WHERE f.trigger = w.t AND f.path = w.pa AND f.fire_key <> w.k"
    f" AND f.state IN {_FINISHED}")
_UPDATE = ("UPDATE trigger_fires SET state = $1, job_id = $2, error = $3, attempt = $4,"
           " idem_key = $5, updated_at = $6 WHERE trigger = $7 AND fire_key = $8")
_SUBMITTED = ("UPDATE trigger_fires SET state = 'submitted', job_id = $1, error = NULL,"
              " updated_at = $2 WHERE trigger = $3 AND fire_key = $4"
              " AND state IN ('claimed', 'waiting')")


class PgTriggerStore:
    """:class:`aftd.triggers.store.TriggerStore` on the fleet's database (see the module
    docstring)."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def open(self) -> None:
        """The tables come with ``aftd db migrate``; the daemon checked the schema."""

    async def close(self) -> None:
        """The pool belongs to the fleet store."""

    async def sync_trigger(self, name: str, definition: str, now: float) -> TriggerRecord:
        return await self._db.tx(lambda c: _sync(c, name, definition, now))

    async def set_paused(self, name: str, paused: bool, now: float) -> None:
        await self._db.execute(
            "UPDATE trigger_state SET paused = $1, updated_at = $2,"
            " since = CASE WHEN $1 THEN since ELSE $2 END WHERE trigger = $3",
            paused, now, name)

    async def claim(self, fires: Sequence[Fire], now: float) -> list[Fire]:
        won: list[Fire] = []
        for start in range(0, len(fires), CLAIM_BATCH):
            batch = list(fires[start:start + CLAIM_BATCH])
            won.extend(await self._db.tx(lambda c, b=batch: _claim(c, b, now)))  # type: ignore[misc]
        return won

    async def paused_states(self) -> dict[str, tuple[bool, float]]:
        """Every trigger's pause and since (hosts follow pauses made elsewhere)."""
        rows = await self._db.fetch("SELECT trigger, paused, since FROM trigger_state")
        return {str(r[0]): (bool(r[1]), float(r[2])) for r in rows}

    async def is_claimed(self, trigger: str, key: str) -> bool:
        return await self._db.fetchval(
            "SELECT 1 FROM trigger_fires WHERE trigger = $1 AND fire_key = $2",
            trigger, _b(key)) is not None

    async def update(self, fires: Sequence[Fire], now: float) -> None:
        rows = [(f.state, f.job_id, f.error, f.attempt, f.idempotency_key, now, f.trigger,
                 _b(f.key)) for f in fires]
        if rows:
            await self._db.tx(lambda c: c.executemany(_UPDATE, rows))

    async def mark_submitted(self, fires: Sequence[Fire], now: float) -> None:
        rows = [(f.job_id, now, f.trigger, _b(f.key)) for f in fires]
        if rows:
            await self._db.tx(lambda c: c.executemany(_SUBMITTED, rows))

    async def job_ended(self, idempotency_key: str, job_id: str, state: str,
                        error: str | None, now: float) -> Fire | None:
        async def work(c: asyncpg.Connection) -> Fire | None:
            await c.execute(
                "UPDATE trigger_fires SET state = $1, job_id = $2, error = $3, updated_at = $4"
                " WHERE idem_key = $5 AND state IN ('claimed', 'waiting', 'submitted')",
                state, job_id, error, now, idempotency_key)
            row = await c.fetchrow(f"SELECT {_COLS} FROM trigger_fires WHERE idem_key = $1",  # noqa: S608
                                   idempotency_key)
            return _fire(row) if row else None
        return await self._db.tx(work)

    async def by_job(self, job_id: str) -> Fire | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLS} FROM trigger_fires WHERE job_id = $1 LIMIT 1", job_id)  # noqa: S608
        return _fire(row) if row else None

    async def fires(self, *, trigger: str | None = None, states: Sequence[str] = (),
                    path: str | None = None, limit: int = 1000,
                    newest: bool = False) -> list[Fire]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("trigger", trigger), ("path", _b(path))):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if states:
            args.append(list(states))
            where.append(f"state = ANY(${len(args)}::text[])")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "updated_at DESC, fire_key" if newest else "claimed_at, fire_key"
        args.append(limit)
        rows = await self._db.fetch(
            f"SELECT {_COLS} FROM trigger_fires {clause} ORDER BY {order} LIMIT ${len(args)}",  # noqa: S608
            *args)
        return [_fire(r) for r in rows]

    async def fire_keys(self, trigger: str) -> list[str]:
        rows = await self._db.fetch("SELECT fire_key FROM trigger_fires WHERE trigger = $1",
                                    trigger)
        return [_s(r[0]) for r in rows]

    async def forget(self, trigger: str, keys: Sequence[str]) -> list[str]:
        gone: list[str] = []
        for start in range(0, len(keys), CLAIM_BATCH):
            batch = [_b(k) for k in keys[start:start + CLAIM_BATCH]]
            rows = await self._db.fetch(
                "DELETE FROM trigger_fires WHERE trigger = $1 AND fire_key = ANY($2::bytea[])"  # noqa: S608
                f" AND state IN {_FINISHED} RETURNING fire_key", trigger, batch)
            done = {_s(r[0]) for r in rows}
            gone.extend(k for k in keys[start:start + CLAIM_BATCH] if k in done)
        return gone

    async def prune(self, kinds: Sequence[str], claimed_before: float) -> int:
        done = await self._db.execute(
            "DELETE FROM trigger_fires WHERE kind = ANY($1::text[]) AND claimed_at < $2"  # noqa: S608
            f" AND state IN {_FINISHED}", list(kinds), claimed_before)
        return int(done.split()[-1])

    async def last_fire(self, trigger: str) -> Fire | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLS} FROM trigger_fires WHERE trigger = $1 AND job_id IS NOT NULL"  # noqa: S608
            " ORDER BY claimed_at DESC LIMIT 1", trigger)
        return _fire(row) if row else None

    async def count(self, trigger: str, state: str) -> int:
        return int(await self._db.fetchval(
            "SELECT COUNT(*) FROM trigger_fires WHERE trigger = $1 AND state = $2",
            trigger, state))


async def _sync(c: asyncpg.Connection, name: str, definition: str,
                now: float) -> TriggerRecord:
    # Two hosts starting at once: one inserts, the other finds its row (locked until then)
    # and agrees on its ``since``.
    inserted = await c.fetchval(
        "INSERT INTO trigger_state (trigger, definition, since, paused, updated_at)"
        " VALUES ($1, $2, $3, FALSE, $3) ON CONFLICT (trigger) DO NOTHING RETURNING 1",
        name, definition, now)
    if inserted:
        return TriggerRecord(name, definition, now, False, changed=True)
    row = await c.fetchrow("SELECT definition, since, paused FROM trigger_state"
                           " WHERE trigger = $1 FOR UPDATE", name)
    if row["definition"] == definition:
        return TriggerRecord(name, definition, float(row["since"]), bool(row["paused"]))
    await c.execute("UPDATE trigger_state SET definition = $2, since = $3, updated_at = $3"
                    " WHERE trigger = $1", name, definition, now)
    return TriggerRecord(name, definition, now, bool(row["paused"]), changed=True)


async def _claim(c: asyncpg.Connection, fires: list[Fire], now: float) -> list[Fire]:
    cols: list[list[Any]] = [[] for _ in range(14)]
    for f in fires:
        for i, value in enumerate((f.trigger, _b(f.key), f.kind, f.script,
                                   json.dumps(f.params, sort_keys=True), _b(f.path), f.size,
                                   f.mtime, f.due_at, f.attempt, f.state, f.job_id,
                                   f.idempotency_key, f.error)):
            cols[i].append(value)
    rows = await c.fetch(_CLAIM, *cols, now)
    won_keys = {(str(r[0]), _s(r[1])) for r in rows}
    won: list[Fire] = []
    for f in fires:
        if (f.trigger, f.key) in won_keys:
            won_keys.discard((f.trigger, f.key))  # a fire listed twice is won once
            won.append(replace(f, claimed_at=now, updated_at=now))
    watched = [f for f in won if f.kind == "watch" and f.path is not None]
    if watched:
        await c.execute(_REPLACED, [f.trigger for f in watched],
                        [_b(f.path) for f in watched], [_b(f.key) for f in watched])
    return won


@overload
def _b(text: str) -> bytes: ...


@overload
def _b(text: None) -> None: ...


def _b(text: str | None) -> bytes | None:
    """A key or path as stored: its bytes (surrogateescape gives back a non-UTF-8 name's)."""
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def _fire(row: Any) -> Fire:
    return Fire(trigger=row[0], key=_s(row[1]), kind=row[2], script=row[3],
                params=json.loads(row[4]), path=None if row[5] is None else _s(row[5]),
                size=row[6], mtime=row[7], due_at=row[8], attempt=row[9], state=row[10],
                job_id=row[11], error=row[12], claimed_at=row[13], updated_at=row[14])
