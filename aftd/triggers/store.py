"""What triggers keep durably: one row per fire, and each trigger's own settings.

A fire is **claimed** by inserting its row, keyed by (trigger, fire key): for a schedule the key
is the due time, for a watch the file version (vfs, path, size, mtime). The insert either
creates the row or finds it there, atomically, so a due time or a file version is claimed once
however many loops, restarts or hosts try; the host whose insert created the row submits the
job. On a store shared by a fleet (PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING``) the same
insert makes a schedule or a watch fire once for the whole fleet.

The job is submitted with an idempotency key derived from the row (:attr:`Fire.idempotency_key`),
so a claim whose process died before it recorded the job id is submitted again after restart
and finds the job it had already created, if any: a claimed fire becomes exactly one job.

Row states: ``claimed`` (to be submitted), ``waiting`` (a schedule with ``overlap = "queue"``
whose previous job still runs), ``submitted`` (its job is queued or running), ``succeeded``
(the job succeeded; the ``after`` step on the file is still owed), ``done``, ``failed`` (the
job failed, or the fire could not be submitted: the file is left and not fired again until it
changes or is retried) and ``skipped`` (a due time consumed without a job: overlap, misfire).

:class:`TriggerStore` is the interface; :class:`SqliteTriggerStore` keeps the rows in the job
store's SQLite file, in threads of its own (:mod:`aftd.dbthread`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from aftd.dbthread import DbThread, connect, transaction

__all__ = ["ACTIVE_STATES", "FIRE_STATES", "STORE_ERRORS", "Fire", "SqliteTriggerStore",
           "TriggerRecord", "TriggerStore"]

# What a failing store raises, whatever the database: a locked or broken SQLite file, a full
# disk, a lost database connection (a store for another database raises an OSError subclass).
# Callers wait and retry on these; anything else is a bug and is not retried.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)

FIRE_STATES = ("claimed", "waiting", "submitted", "succeeded", "done", "failed", "skipped")
# A row in one of these still has work owed (a submit, a job, an after step).
ACTIVE_STATES = ("claimed", "waiting", "submitted", "succeeded")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trigger_fires (
    trigger    TEXT    NOT NULL,
    fire_key   TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('schedule', 'watch', 'run')),
    script     TEXT    NOT NULL,
    params     TEXT    NOT NULL,
    path       TEXT,
    size       INTEGER,
    mtime      REAL,
    due_at     REAL,
    attempt    INTEGER NOT NULL DEFAULT 1,
    state      TEXT    NOT NULL CHECK (state IN ('claimed', 'waiting', 'submitted', 'succeeded',
                                                 'done', 'failed', 'skipped')),
    job_id     TEXT,
    idem_key   TEXT    NOT NULL,
    error      TEXT,
    claimed_at REAL    NOT NULL,
    updated_at REAL    NOT NULL,
    PRIMARY KEY (trigger, fire_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trigger_fires_job ON trigger_fires (job_id);
CREATE INDEX IF NOT EXISTS trigger_fires_idem ON trigger_fires (idem_key);
CREATE INDEX IF NOT EXISTS trigger_fires_state ON trigger_fires (state, trigger);
CREATE INDEX IF NOT EXISTS trigger_fires_path ON trigger_fires (trigger, path);
CREATE INDEX IF NOT EXISTS trigger_fires_claimed ON trigger_fires (trigger, claimed_at);
CREATE TABLE IF NOT EXISTS trigger_state (
    trigger    TEXT    PRIMARY KEY,
    definition TEXT    NOT NULL,
    since      REAL    NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at REAL    NOT NULL
);
"""

_COLS = ("trigger, fire_key, kind, script, params, path, size, mtime, due_at, attempt, state, "
         "job_id, error, claimed_at, updated_at")
# Rows claimed in one transaction at most (a burst of files is claimed in batches).
CLAIM_BATCH = 500


@dataclass(frozen=True)
class Fire:
    """One fire of a trigger: a due time of a schedule, a file version of a watch, or a manual
    run. ``params`` are the fired job's, fixed when the fire is claimed."""

    trigger: str
    key: str
    kind: str  # schedule | watch | run
    script: str
    params: dict[str, Any]
    path: str | None = None
    size: int | None = None
    mtime: float | None = None
    due_at: float | None = None
    attempt: int = 1
    state: str = "claimed"
    job_id: str | None = None
    error: str | None = None
    claimed_at: float = 0.0
    updated_at: float = 0.0

    @property
    def idempotency_key(self) -> str:
        """The job's Idempotency-Key: the same for every submit of this claim, new for a retry."""
        # surrogateescape: a file name that is not UTF-8 keys its fire like any other.
        digest = hashlib.sha256(f"{self.trigger}\0{self.key}".encode(
            "utf-8", "surrogateescape")).hexdigest()[:32]
        return f"trigger:{self.trigger[:64]}:{digest}:{self.attempt}"

    def with_state(self, state: str, **changes: Any) -> Fire:
        return replace(self, state=state, **changes)


@dataclass(frozen=True)
class TriggerRecord:
    """A trigger's durable settings: the definition in force and since when, and pause."""

    name: str
    definition: str
    since: float
    paused: bool = False
    changed: bool = field(default=False, compare=False)  # the definition was new or changed


class TriggerStore(Protocol):
    """The durable state of triggers (see the module docstring). Every method is a coroutine;
    a store that cannot do its work raises one of :data:`STORE_ERRORS`."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def sync_trigger(self, name: str, definition: str, now: float) -> TriggerRecord:
        """The trigger's record; a new or changed ``definition`` takes effect ``now``."""

    async def set_paused(self, name: str, paused: bool, now: float) -> None:
        """Pause or resume; a resume takes effect ``now`` (misfires from before are not run)."""

    async def claim(self, fires: Sequence[Fire], now: float) -> list[Fire]:
        """Insert the fires not claimed yet; return those this call inserted. A watch fire
        replaces the finished rows of older versions of its file."""

    async def is_claimed(self, trigger: str, key: str) -> bool: ...

    async def update(self, fires: Sequence[Fire], now: float) -> None:
        """Store each fire's state, job id, error and attempt (one transaction)."""

    async def mark_submitted(self, fires: Sequence[Fire], now: float) -> None:
        """Record the fires' jobs: rows still ``claimed`` or ``waiting`` become ``submitted``
        (a job may end, and its outcome be recorded, before its submit is)."""

    async def job_ended(self, idempotency_key: str, job_id: str, state: str,
                        error: str | None, now: float) -> Fire | None:
        """A fired job ended: its row (found by the job's idempotency key) takes ``state``
        unless it is finished already; the row as it is now, or None for no such row."""

    async def by_job(self, job_id: str) -> Fire | None: ...

    async def fires(self, *, trigger: str | None = None, states: Sequence[str] = (),
                    path: str | None = None, limit: int = 1000,
                    newest: bool = False) -> list[Fire]:
        """Rows, oldest claim first (``newest``: most recently changed first)."""

    async def fire_keys(self, trigger: str) -> list[str]:
        """Every key claimed for ``trigger`` (a watch keeps them in memory to skip known
        files without asking the store)."""

    async def forget(self, trigger: str, keys: Sequence[str]) -> list[str]:
        """Delete the finished rows (done, failed, skipped) among ``keys``; the keys deleted."""

    async def prune(self, kinds: Sequence[str], claimed_before: float) -> int:
        """Delete finished rows of these kinds claimed before the horizon."""

    async def last_fire(self, trigger: str) -> Fire | None:
        """The most recently claimed row that got a job."""

    async def count(self, trigger: str, state: str) -> int: ...


class SqliteTriggerStore:
    """:class:`TriggerStore` in SQLite: a writer and a reader connection, each in its own
    thread; every write commits before its await returns (WAL, ``synchronous=NORMAL``, like
    the job store: a committed claim survives a kill of the process)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._w = DbThread("aftd-triggers-w")
        self._r = DbThread("aftd-triggers-r")

    async def open(self) -> None:
        await self._w.open(lambda: _open_writer(self.path, self._busy_timeout_s))
        await self._r.open(lambda: connect(self.path, busy_timeout_s=self._busy_timeout_s))

    async def close(self) -> None:
        await self._r.close()
        await self._w.close()

    async def sync_trigger(self, name: str, definition: str, now: float) -> TriggerRecord:
        return await self._w.run(lambda c: _sync(c, name, definition, now))

    async def set_paused(self, name: str, paused: bool, now: float) -> None:
        await self._w.run(lambda c: c.execute(
            "UPDATE trigger_state SET paused = ?, updated_at = ?, "
            "since = CASE WHEN ? THEN since ELSE ? END WHERE trigger = ?",
            (int(paused), now, int(paused), now, name)))

    async def claim(self, fires: Sequence[Fire], now: float) -> list[Fire]:
        won: list[Fire] = []
        for start in range(0, len(fires), CLAIM_BATCH):
            batch = fires[start:start + CLAIM_BATCH]
            won.extend(await self._w.run(lambda c, b=batch: _claim(c, b, now)))  # type: ignore[misc]
        return won

    async def is_claimed(self, trigger: str, key: str) -> bool:
        row = await self._r.run(lambda c: c.execute(
            "SELECT 1 FROM trigger_fires WHERE trigger = ? AND fire_key = ?",
            (trigger, _db(key))).fetchone())
        return row is not None

    async def update(self, fires: Sequence[Fire], now: float) -> None:
        rows = [(f.state, f.job_id, f.error, f.attempt, f.idempotency_key, now, f.trigger,
                 _db(f.key)) for f in fires]
        if rows:
            await self._w.run(lambda c: _update(c, _UPDATE, rows))

    async def mark_submitted(self, fires: Sequence[Fire], now: float) -> None:
        rows = [(f.job_id, now, f.trigger, _db(f.key)) for f in fires]
        if rows:
            await self._w.run(lambda c: _update(c, _SUBMITTED, rows))

    async def job_ended(self, idempotency_key: str, job_id: str, state: str,
                        error: str | None, now: float) -> Fire | None:
        return await self._w.run(lambda c: _job_ended(c, idempotency_key, job_id, state,
                                                      error, now))

    async def by_job(self, job_id: str) -> Fire | None:
        row = await self._r.run(lambda c: c.execute(
            f"SELECT {_COLS} FROM trigger_fires WHERE job_id = ?",  # noqa: S608
            (job_id,)).fetchone())
        return _fire(row) if row else None

    async def fires(self, *, trigger: str | None = None, states: Sequence[str] = (),
                    path: str | None = None, limit: int = 1000,
                    newest: bool = False) -> list[Fire]:
        where, args = [], []
        for column, value in (("trigger", trigger), ("path", path)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(_db(value))
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "updated_at DESC, fire_key" if newest else "claimed_at, fire_key"
        sql = (f"SELECT {_COLS} FROM trigger_fires {clause} "  # noqa: S608
               f"ORDER BY {order} LIMIT ?")
        rows = await self._r.run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [_fire(r) for r in rows]

    async def fire_keys(self, trigger: str) -> list[str]:
        rows = await self._r.run(lambda c: c.execute(
            "SELECT fire_key FROM trigger_fires WHERE trigger = ?", (trigger,)).fetchall())
        return [_text(r[0]) for r in rows]

    async def forget(self, trigger: str, keys: Sequence[str]) -> list[str]:
        gone: list[str] = []
        for start in range(0, len(keys), CLAIM_BATCH):
            batch = keys[start:start + CLAIM_BATCH]
            gone.extend(await self._w.run(lambda c, b=batch: _forget(c, trigger, b)))  # type: ignore[misc]
        return gone

    async def prune(self, kinds: Sequence[str], claimed_before: float) -> int:
        marks = ",".join("?" * len(kinds))
        sql = (f"DELETE FROM trigger_fires WHERE kind IN ({marks}) AND "  # noqa: S608
               "claimed_at < ? AND state IN ('done', 'failed', 'skipped')")
        cur = await self._w.run(lambda c: c.execute(sql, (*kinds, claimed_before)))
        return int(cur.rowcount)

    async def last_fire(self, trigger: str) -> Fire | None:
        row = await self._r.run(lambda c: c.execute(
            f"SELECT {_COLS} FROM trigger_fires WHERE trigger = ? "  # noqa: S608
            "AND job_id IS NOT NULL ORDER BY claimed_at DESC LIMIT 1", (trigger,)).fetchone())
        return _fire(row) if row else None

    async def count(self, trigger: str, state: str) -> int:
        row = await self._r.run(lambda c: c.execute(
            "SELECT COUNT(*) FROM trigger_fires WHERE trigger = ? AND state = ?",
            (trigger, state)).fetchone())
        return int(row[0])


# -- units of work (run in a connection's thread) ------------------------------------------------
def _open_writer(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    conn = connect(path, busy_timeout_s=busy_timeout_s)
    conn.executescript(_SCHEMA)
    return conn


def _sync(c: sqlite3.Connection, name: str, definition: str, now: float) -> TriggerRecord:
    with transaction(c):
        row = c.execute("SELECT definition, since, paused FROM trigger_state WHERE trigger = ?",
                        (name,)).fetchone()
        if row is not None and row[0] == definition:
            return TriggerRecord(name, definition, float(row[1]), bool(row[2]))
        c.execute("INSERT INTO trigger_state (trigger, definition, since, paused, updated_at) "
                  "VALUES (?, ?, ?, 0, ?) ON CONFLICT (trigger) DO UPDATE SET "
                  "definition = excluded.definition, since = excluded.since, "
                  "updated_at = excluded.updated_at", (name, definition, now, now))
    paused = bool(row[2]) if row is not None else False
    return TriggerRecord(name, definition, now, paused, changed=True)


def _claim(c: sqlite3.Connection, fires: Sequence[Fire], now: float) -> list[Fire]:
    won: list[Fire] = []
    with transaction(c):
        for f in fires:
            cur = c.execute(
                "INSERT INTO trigger_fires (trigger, fire_key, kind, script, params, path, size, "
                "mtime, due_at, attempt, state, job_id, idem_key, error, claimed_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (f.trigger, _db(f.key), f.kind, f.script, json.dumps(f.params, sort_keys=True),
                 _db(f.path), f.size, f.mtime, f.due_at, f.attempt, f.state, f.job_id,
                 f.idempotency_key, f.error, now, now))
            if cur.rowcount != 1:
                continue
            won.append(replace(f, claimed_at=now, updated_at=now))
            if f.kind == "watch":  # an older version of the file is history now
                # INDEXED BY: with many finished rows the planner would otherwise walk the
                # (state, trigger) index, one pass over the trigger's rows for every claim.
                c.execute("DELETE FROM trigger_fires INDEXED BY trigger_fires_path "
                          "WHERE trigger = ? AND path = ? AND fire_key != ? "
                          "AND state IN ('done', 'failed', 'skipped')",
                          (f.trigger, _db(f.path), _db(f.key)))
    return won


_UPDATE = ("UPDATE trigger_fires SET state = ?, job_id = ?, error = ?, attempt = ?, idem_key = ?, "
           "updated_at = ? WHERE trigger = ? AND fire_key = ?")
_SUBMITTED = ("UPDATE trigger_fires SET state = 'submitted', job_id = ?, error = NULL, "
              "updated_at = ? WHERE trigger = ? AND fire_key = ? "
              "AND state IN ('claimed', 'waiting')")


def _update(c: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with transaction(c):
        c.executemany(sql, rows)


def _job_ended(c: sqlite3.Connection, key: str, job_id: str, state: str, error: str | None,
               now: float) -> Fire | None:
    with transaction(c):
        c.execute("UPDATE trigger_fires SET state = ?, job_id = ?, error = ?, updated_at = ? "
                  "WHERE idem_key = ? AND state IN ('claimed', 'waiting', 'submitted')",
                  (state, job_id, error, now, key))
        row = c.execute(f"SELECT {_COLS} FROM trigger_fires WHERE idem_key = ?",  # noqa: S608
                        (key,)).fetchone()
    return _fire(row) if row else None


def _forget(c: sqlite3.Connection, trigger: str, keys: Sequence[str]) -> list[str]:
    gone: list[str] = []
    with transaction(c):
        for key in keys:
            cur = c.execute("DELETE FROM trigger_fires WHERE trigger = ? AND fire_key = ? "
                            "AND state IN ('done', 'failed', 'skipped')", (trigger, _db(key)))
            if cur.rowcount == 1:
                gone.append(key)
    return gone


def _fire(row: Sequence[Any]) -> Fire:
    return Fire(trigger=row[0], key=_text(row[1]), kind=row[2], script=row[3],
                params=json.loads(row[4]), path=None if row[5] is None else _text(row[5]),
                size=row[6], mtime=row[7],
                due_at=row[8], attempt=row[9], state=row[10], job_id=row[11], error=row[12],
                claimed_at=row[13], updated_at=row[14])


def _db(text: str | None) -> str | bytes | None:
    """A key or path as SQLite stores it: text, or the name's bytes when it is not UTF-8
    (``os.listdir`` gives such a name with surrogate escapes, which sqlite3 cannot encode). A
    BLOB keeps its type in a TEXT column and compares equal only to the same bytes."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _text(value: str | bytes) -> str:
    """Back from :func:`_db`."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
