"""``[store]`` and ``[host]``: where jobs and their records live (a SQLite file, or a PostgreSQL
database shared by a fleet of hosts), and this host's place in such a fleet."""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import Field, Strict, StringConstraints, field_validator

from aftd.configmodel import HOST_TAG_PATTERN, ConfigModel

__all__ = ["HostConfig", "StoreConfig"]

_PG_SCHEMES = ("postgresql://", "postgres://")


class StoreConfig(ConfigModel):
    """Where jobs, logs, idempotency keys, the report outbox and trigger state live: the SQLite
    file in ``paths.state_dir`` (the default, one host), or a PostgreSQL database shared by a
    fleet of hosts (README, "Running a fleet")."""

    url: str = Field("", description=(
        "postgresql://USER@HOST:PORT/DATABASE of a shared fleet store (no password in it: see "
        "password_secret); empty: the SQLite file in state_dir"),
        examples=["postgresql://aftd@db.example:5432/aftd"])
    password_secret: str = Field("", description=(
        "name of the secret holding the database password (resolved through [secrets]); "
        "empty: no password"), examples=["aftd-db-password"])
    pool_size: int = Field(10, ge=2, le=1000, description=(
        "PostgreSQL connections per host (one more listens for wake-ups)"))
    busy_timeout_s: float = Field(10.0, ge=0.05, le=3600, description=(
        "a write waits this long for a lock held by someone else (a backup, a sqlite3 shell), "
        "then fails and is retried; reads never wait"))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        if not value.startswith(_PG_SCHEMES):
            raise ValueError("must start with postgresql:// (or be empty for SQLite)")
        netloc = value.split("://", 1)[1].split("/", 1)[0]
        if ":" in netloc.rpartition("@")[0]:
            raise ValueError("must not contain a password: name a secret in "
                             "store.password_secret instead")
        if "/" not in value.split("://", 1)[1] or not value.split("://", 1)[1].split("/", 1)[1]:
            raise ValueError("must name a database (postgresql://USER@HOST:PORT/DATABASE)")
        return value

    @property
    def fleet(self) -> bool:
        """True when the store is a shared PostgreSQL database."""
        return bool(self.url)


def _default_host_id() -> str:
    return socket.gethostname() or "localhost"


_HOST_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
Tag = Annotated[str, StringConstraints(pattern=HOST_TAG_PATTERN)]


class HostConfig(ConfigModel):
    """This host in a fleet: its name, what it can run, and its lease on the shared store."""

    id: Annotated[str, StringConstraints(pattern=_HOST_ID)] = Field(
        default_factory=_default_host_id, description=(
            "this host's name in the fleet, unique per host (default: the hostname)"),
        examples=["transfer-01"])
    tags: Annotated[tuple[Tag, ...], Strict(False)] = Field((), description=(
        "what this host can run: a job whose script's REQUIRES_TAGS or trigger's hostTags "
        "are not all here runs on another host"), examples=[["zone:eu", "vfs:archive"]])
    lease_s: float = Field(30.0, ge=3, le=3600, description=(
        "a host silent this long is taken over: its running jobs are marked interrupted and "
        "its reports delivered by a live host"))
