"""The typed configuration: loaded from TOML once, validated, passed in explicitly.

One model per section (``[server]``, ``[jobs]``, …); the sections of other layers live beside
their code (:mod:`aftd.secrets.config`, :mod:`aftd.vfs.config`, :mod:`aftd.executors`).
Construction is cheap and side-effect free; creating directories, certificates and keys happens
in the daemon's start-up. Every error names the file, the dotted key and the reason. The example
config and ``docs/config.md`` are generated from these models (``python -m aftd.config_docs``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aftd.configmodel import (
    HOST_TAG_PATTERN,
    ConfigModel,
    InvalidKey,
    Networks,
    OptionalPath,
    PositionalModel,
    from_file,
    path_or,
    validate,
)
from aftd.errors import ConfigError
from aftd.executors import ExecutorsConfig
from aftd.notifyconfig import NotifyConfig
from aftd.scopes import ALL_SCOPES, ScopeName
from aftd.secrets.config import SecretsConfig
from aftd.triggers.config import TriggerEntries
from aftd.vfs.config import VfsEntries

__all__ = [
    "DEFAULT_LISTEN",
    "ISOLATION_MODES",
    "SCRIPT_SUFFIXES",
    "ApiKeyConfig",
    "AuthConfig",
    "Config",
    "ConsoleConfig",
    "HostConfig",
    "HttpConfig",
    "JobsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PathsConfig",
    "ReportsConfig",
    "ScriptsConfig",
    "ServerConfig",
    "StoreConfig",
    "bundled_scripts_dir",
    "default_state_dir",
    "load_config",
    "parse_config",
]

DEFAULT_LISTEN = "127.0.0.1:44399"
LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
LOOPBACK = tuple(ipaddress.ip_network(n) for n in LOOPBACK_CIDRS)
EMBEDDED = "<embedded defaults>"
_HEX = frozenset("0123456789abcdef")


def default_state_dir() -> Path:
    """Where state lives when no config says: works without root from a fresh clone."""
    env = os.environ.get("AFTD_STATE_DIR")
    if env:
        # Absolute from the start: a script's os.chdir() must not move the state.
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "aftd"


def bundled_scripts_dir() -> Path:
    return Path(__file__).resolve().parent / "examples" / "scripts"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"must be HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


class ServerConfig(ConfigModel):
    """The HTTPS listener and the limits that keep a client from holding memory or connections
    (README, "Limits")."""

    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT (or [V6]:PORT) to listen on")
    tls_cert: OptionalPath = Field(
        None, description="PEM certificate; empty: a self-signed one is generated in state_dir",
        examples=["/etc/aftd/tls/cert.pem"])
    tls_key: OptionalPath = Field(None, description="PEM private key of tls_cert",
                                  examples=["/etc/aftd/tls/key.pem"])
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30,
                                description="larger request bodies get 413")
    max_params_bytes: int = Field(
        64 << 10, ge=64, description="a trigger's params as compact UTF-8 JSON; more gets 413 "
        "(default: 65536, at most max_body_bytes)")
    max_page_bytes: int = Field(1 << 20, ge=4096, le=1 << 30, description=(
        "a page of GET /v1/jobs or .../log stops before this size"))
    header_timeout_s: float = Field(10.0, ge=0.1, le=3600, description=(
        "the TLS handshake and the request headers must arrive within this"))
    body_timeout_s: float = Field(30.0, ge=0.1, le=3600, description=(
        "a request body must arrive within this (408); a log follower that stops reading this "
        "long is disconnected"))
    keepalive_timeout_s: float = Field(15.0, ge=0.1, le=3600, description=(
        "an idle keep-alive connection is closed after this"))
    max_connections: int = Field(256, ge=1, le=1_000_000, description=(
        "open connections (handshakes included); more are refused"))
    public_url: str = Field("", description=(
        "the daemon's address as users reach it, for links to the console in notifications "
        "(default: https://HOST:PORT of listen)"), examples=["https://transfer-1.example.net:44399"])

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def base_url(self) -> str:
        """``public_url``, or ``https://HOST:PORT`` of ``listen`` (the machine's name when it
        listens on every address)."""
        if self.public_url:
            return self.public_url
        host = self.host
        if ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_unspecified:
            host = socket.getfqdn()
        return f"https://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if not from_file() and ("host" in data or "port" in data):
            # Python callers (tools, tests) may give host/port; TOML has `listen` only.
            data = dict(data)
            host, port = data.pop("host", "127.0.0.1"), data.pop("port", 44399)
            data["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        body = data.get("max_body_bytes")
        if "max_params_bytes" not in data and isinstance(body, int) and not isinstance(body, bool):
            data = {**data, "max_params_bytes": min(64 << 10, body)}
        return data

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment, like "
                             f"https://transfer-1.example.net:44399; got {value[:200]!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidKey("tls_key" if self.tls_key is None else "tls_cert",
                             "tls_cert and tls_key must be set together")
        if self.max_params_bytes > self.max_body_bytes:
            raise InvalidKey("max_params_bytes", f"must be <= server.max_body_bytes "
                             f"({self.max_body_bytes}): params arrive inside the request body")
        return self


class ApiKeyConfig(PositionalModel):
    """One API key, stored as its SHA-256 digest only (create one with ``aftd gen-apikey``)."""

    POSITIONAL = ("name", "sha256", "allow_from")

    name: str = Field(min_length=1, description="shown in logs and the job's record",
                      examples=["orchestrator"])
    sha256: str = Field(repr=False, description="hex SHA-256 digest of the key",
                        examples=["0" * 64])
    # The default as text, validated like a configured value (so the schema can show it).
    allow_from: Networks = Field(LOOPBACK_CIDRS, validate_default=True, description=(
        "CIDR networks the key may be used from (default: loopback only)"))
    scopes: Annotated[tuple[ScopeName, ...], Strict(False)] = Field(ALL_SCOPES, description=(
        "what the key may do: jobs:trigger, jobs:read, jobs:cancel, triggers:manage, "
        "reports:manage, metrics:read, admin (admin grants all; default: all)"))
    scripts: Annotated[tuple[str, ...], Strict(False)] = Field(("*",), description=(
        "glob patterns of the script ids the key may trigger (default: every script)"),
        examples=[["claim-*", "hello"]])

    @field_validator("scopes", "scripts")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"must not be empty (without `{info.field_name}` the key has "
                             "them all)")
        for i, item in enumerate(value):
            if not item:
                raise InvalidKey(f"[{i}]", "must not be empty")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        value = value.lower()
        if len(value) != 64 or not set(value) <= _HEX:
            raise ValueError("must be a 64-character hex SHA-256 digest (see `aftd gen-apikey`)")
        return value


class AuthConfig(ConfigModel):
    """Who may call the API. With no ``[[auth.api_keys]]`` at all, a key is generated on the
    first start and printed once."""

    api_keys: Annotated[tuple[ApiKeyConfig, ...], Strict(False)] = Field(
        (), description="the API keys ([[auth.api_keys]])")

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        seen: set[str] = set()
        for i, key in enumerate(self.api_keys):
            if key.name in seen:
                raise InvalidKey(f"api_keys[{i}].name", f"duplicate API key name {key.name!r}")
            seen.add(key.name)
        return self


class PathsConfig(ConfigModel):
    """Where the daemon keeps its state and finds its scripts."""

    state_dir: Annotated[Path, path_or(default_state_dir)] = Field(
        default_factory=default_state_dir, description="job store, outbox, generated cert and "
        "key digest (default: $AFTD_STATE_DIR, else $XDG_STATE_HOME/aftd or "
        "~/.local/state/aftd)", examples=["/var/lib/aftd"])
    scripts_dir: Annotated[Path, path_or(bundled_scripts_dir)] = Field(
        default_factory=bundled_scripts_dir, description="the scripts jobs run (default: the "
        "bundled examples)", examples=["/etc/aftd/scripts"])


class JobsConfig(ConfigModel):
    """The runner: concurrency, queue, logs, time limits."""

    max_concurrent: int = Field(64, ge=1, le=100_000,
                                description="beyond this, jobs wait in a FIFO queue")
    max_queued: int = Field(10_000, ge=0, description=(
        "beyond this (with all slots busy), triggers get 503"))
    log_lines_per_job: int = Field(5_000, ge=10, description="the newest lines are kept")
    shutdown_grace_s: float = Field(30.0, ge=0, description=(
        "SIGTERM: running jobs get this long to finish"))
    retention_days: float = Field(30.0, ge=0, description=(
        "finished jobs and their logs are pruned after this"))
    timeout_s: float = Field(86_400.0, ge=0, description=(
        "a job running longer fails; 0: no limit (a script's TIMEOUT_S and a trigger's "
        "timeoutS win over it)"))
    loop_block_warn_s: float = Field(1.0, ge=0, le=3600, description=(
        "a stall of the event loop longer than this is logged (event_loop_blocked, with the "
        "job, script and stack); 0: off"))

    @field_validator("loop_block_warn_s")
    @classmethod
    def _loop_block(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError(f"must be 0 (off) or at least 0.1, got {value}")
        return value


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


class LoggingConfig(ConfigModel):
    """Structured logs on stdout."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="the "
                                                                "lowest level logged")
    format: Literal["json", "console"] = Field("json", description=(
        "json for log collectors, console for humans"))


class MetricsConfig(ConfigModel):
    """The Prometheus endpoint ``/metrics``."""

    open: bool = Field(False, description="true: /metrics without an API key")


class HttpConfig(ConfigModel):
    """Defaults for ``job.http(...)`` clients."""

    ca_file: OptionalPath = Field(None, description=(
        "PEM CA bundle to verify servers with; empty: the system's CAs"),
        examples=["/etc/aftd/orchestrator-ca.pem"])
    timeout_s: float = Field(30.0, ge=0.1, description="per request")


class ReportsConfig(ConfigModel):
    """Durable report delivery (the outbox)."""

    deadline_s: float = Field(86_400.0, ge=1, description="keep retrying a report this long")
    initial_backoff_s: float = Field(1.0, ge=0.01, description="the first retry's delay; it "
                                     "doubles per attempt")
    max_backoff_s: float = Field(300.0, ge=0.01, description="the longest delay between tries")
    timeout_s: float = Field(30.0, ge=0.1, description="per delivery attempt")


class ConsoleConfig(ConfigModel):
    """The operator console at ``/ui/`` on the API's port (README, "Operator console")."""

    enabled: bool = Field(True, description="serve the console at /ui/ (false: 404 there and "
                          "no sign-in)")
    session_ttl_s: float = Field(43_200.0, ge=60, le=30 * 86_400, description=(
        "a sign-in lasts this long; a restart of the daemon signs everyone out"))
    max_sessions: int = Field(1_000, ge=1, le=1_000_000, description=(
        "sessions held at once; beyond it the one closest to expiry is signed out"))


IsolationMode = Literal["inline", "process"]
ISOLATION_MODES: tuple[str, ...] = typing.get_args(IsolationMode)


class ScriptsConfig(ConfigModel):
    """How scripts run: in the daemon's event loop, or each job in a worker process."""

    isolation: IsolationMode = Field("inline", description=(
        '"process": every job in a worker process of its own (a script\'s ISOLATION wins)'))
    max_workers: int = Field(16, ge=1, le=4096, description=(
        "worker processes alive at once; more isolated jobs wait"))
    kill_grace_s: float = Field(3.0, ge=0, le=60, description=(
        "cancel, timeout or shutdown of an isolated job: SIGTERM, then SIGKILL after this"))
    js_memory_mb: int = Field(256, ge=1, le=65536, description=(
        "memory a SyncJS script's JavaScript engine may allocate (MiB); beyond it the script "
        "gets an out-of-memory error"))


class Config(ConfigModel):
    """The whole configuration. Every key is optional unless a feature needs it; unknown keys
    are errors."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    host: HostConfig = Field(default_factory=HostConfig)
    scripts: ScriptsConfig = Field(default_factory=ScriptsConfig)
    executors: ExecutorsConfig = Field(default_factory=ExecutorsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    vfs: VfsEntries = Field(default_factory=dict, description=(
        "named virtual filesystems ([vfs.NAME]); `type` decides the other keys"))
    triggers: TriggerEntries = Field((), description=(
        "schedules and folder watchers that start jobs ([[triggers]]); `type` decides the "
        "other keys"))
    notify: Annotated[tuple[NotifyConfig, ...], Strict(False)] = Field((), description=(
        "pushed notifications ([[notify]])"))
    _source: str = PrivateAttr(EMBEDDED)

    @model_validator(mode="after")
    def _unique_notify(self) -> Config:
        seen: set[str] = set()
        for i, entry in enumerate(self.notify):
            if entry.name in seen:
                raise InvalidKey(f"notify[{i}].name",
                                 f"duplicate notification name {entry.name!r}")
            seen.add(entry.name)
        return self

    @model_validator(mode="after")
    def _triggers(self) -> Config:
        """What one trigger entry cannot check alone: unique names, and that its VFS and its
        script exist."""
        seen: set[str] = set()
        for i, trigger in enumerate(self.triggers):
            if trigger.name in seen:
                raise InvalidKey(f"triggers[{i}].name", f"duplicate trigger name {trigger.name!r}")
            seen.add(trigger.name)
            vfs = getattr(trigger, "vfs", None)
            if vfs is not None and vfs not in self.vfs:
                known = ", ".join(sorted(self.vfs)) or "none"
                raise InvalidKey(f"triggers[{i}].vfs", f"unknown VFS {vfs!r}; configured: {known}")
            problem = _script_problem(self.paths.scripts_dir, trigger.script)
            if problem:
                raise InvalidKey(f"triggers[{i}].script", problem)
        return self

    @property
    def source(self) -> str:
        """The file this config was read from, or ``<embedded defaults>``."""
        return self._source

    @property
    def api_keys(self) -> tuple[ApiKeyConfig, ...]:
        return self.auth.api_keys


# The script loader's files (aftd.scripts.loader.LANGUAGES, which sits above this module; a
# test keeps the two equal): an id names <id>.py or a SyncJS <id>.js, never both.
SCRIPT_SUFFIXES = (".py", ".js")
_SCRIPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _script_problem(scripts_dir: Path, script_id: str) -> str | None:
    """Why the script loader would not find ``script_id`` in ``scripts_dir``, or None."""
    files = [f"{script_id}{suffix}" for suffix in SCRIPT_SUFFIXES]
    found = [f for f in files if _SCRIPT_ID.match(script_id) and (scripts_dir / f).is_file()]
    if not found:
        return f"unknown script {script_id!r} (no {' or '.join(files)} in {scripts_dir})"
    if len(found) > 1:
        return f"script id {script_id!r} is ambiguous: both {' and '.join(found)} exist"
    return None


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), "(file)", "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "(syntax)", f"invalid TOML: {exc}") from None
    return parse_config(data, str(p), base=p.resolve().parent)


def parse_config(data: dict[str, Any], file: str, *, base: Path) -> Config:
    cfg: Config = validate(Config, data, file=file, base=base)
    cfg._source = file
    return cfg
