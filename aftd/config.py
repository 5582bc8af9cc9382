"""The typed configuration: loaded from TOML once, validated, passed in explicitly.

One model per section (``[jobs]``, ``[paths]``, …); larger sections have modules of their own
(:mod:`aftd.serverconfig`, :mod:`aftd.authconfig`, :mod:`aftd.fleetconfig`) and the sections of
other layers live beside their code (:mod:`aftd.secrets.config`, :mod:`aftd.vfs.config`,
:mod:`aftd.executors`). Construction is cheap and side-effect free; creating directories,
certificates and keys happens in the daemon's start-up. Every error names the file, the dotted
key and the reason. The example config and ``docs/config.md`` are generated from these models
(``python -m aftd.config_docs``).
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, Strict, field_validator, model_validator

from aftd.authconfig import ApiKeyConfig, AuthConfig
from aftd.configmodel import (
    ConfigModel,
    InvalidKey,
    OptionalPath,
    path_or,
    unique_names,
    validate,
)
from aftd.errors import ConfigError
from aftd.executors import ExecutorsConfig
from aftd.fleetconfig import HostConfig, StoreConfig
from aftd.notifyconfig import NotifyConfig
from aftd.secrets.config import SecretsConfig
from aftd.serverconfig import ServerConfig
from aftd.triggers.config import TriggerEntries
from aftd.vfs.config import VfsEntries

__all__ = [
    "ISOLATION_MODES",
    "SCRIPT_SUFFIXES",
    "Config",
    "ConsoleConfig",
    "HttpConfig",
    "JobsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PathsConfig",
    "ReportsConfig",
    "ScriptsConfig",
    "bundled_scripts_dir",
    "default_state_dir",
    "load_config",
    "parse_config",
]

EMBEDDED = "<embedded defaults>"


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
        for _ in unique_names(self.notify, "notify", "notification"):
            pass
        return self

    @model_validator(mode="after")
    def _triggers(self) -> Config:
        """What one trigger entry cannot check alone: unique names, and that its VFS and its
        script exist."""
        for i, trigger in enumerate(unique_names(self.triggers, "triggers", "trigger")):
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
