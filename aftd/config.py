"""The typed configuration: loaded from TOML once, validated, passed in explicitly.

Construction is cheap and side-effect free; creating directories, certificates and keys happens
in the daemon's start-up. Every error names the file, the dotted key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftd.configparse import IPNetwork, Section
from aftd.errors import ConfigError
from aftd.secrets.config import SecretsConfig, parse_secrets_section
from aftd.vfs.config import VfsConfig, parse_vfs_section

__all__ = [
    "DEFAULT_LISTEN",
    "ApiKeyConfig",
    "Config",
    "HttpConfig",
    "JobsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PathsConfig",
    "ReportsConfig",
    "ServerConfig",
    "default_state_dir",
    "load_config",
    "parse_config",
]

DEFAULT_LISTEN = "127.0.0.1:44399"
LOOPBACK = ("127.0.0.0/8", "::1/128")
EMBEDDED = "<embedded defaults>"
_HEX = frozenset("0123456789abcdef")


def default_state_dir() -> Path:
    """Where state lives when no config says: works without root from a fresh clone."""
    env = os.environ.get("AFTD_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "aftd"


def bundled_scripts_dir() -> Path:
    return Path(__file__).resolve().parent / "examples" / "scripts"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 44399
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True)
class ApiKeyConfig:
    name: str
    sha256: str = field(repr=False)
    allow_from: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class PathsConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    scripts_dir: Path = field(default_factory=bundled_scripts_dir)


@dataclass(frozen=True)
class JobsConfig:
    max_concurrent: int = 64
    max_queued: int = 10_000
    log_lines_per_job: int = 5_000
    shutdown_grace_s: float = 30.0
    retention_days: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class MetricsConfig:
    # /metrics needs an API key unless the operator opens it explicitly.
    open: bool = False


@dataclass(frozen=True)
class HttpConfig:
    """Defaults for ``job.http(...)`` clients."""

    ca_file: Path | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ReportsConfig:
    """Durable report delivery (the outbox)."""

    deadline_s: float = 86_400.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Config:
    source: str = EMBEDDED
    server: ServerConfig = field(default_factory=ServerConfig)
    api_keys: tuple[ApiKeyConfig, ...] = ()
    paths: PathsConfig = field(default_factory=PathsConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    vfs: dict[str, VfsConfig] = field(default_factory=dict)


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
    top = Section(data, file, "")
    cfg = Config(
        source=file,
        server=_server(top.table("server"), base),
        api_keys=_api_keys(top.table("auth")),
        paths=_paths(top.table("paths"), base),
        jobs=_jobs(top.table("jobs")),
        logging=_logging(top.table("logging")),
        metrics=_metrics(top.table("metrics")),
        http=_http(top.table("http"), base),
        reports=_reports(top.table("reports")),
        secrets=parse_secrets_section(top.table("secrets"), base),
        vfs=parse_vfs_section(top.table("vfs")),
    )
    top.finish()
    return cfg


def _server(sec: Section, base: Path) -> ServerConfig:
    host, port = parse_listen(sec, sec.str("listen", DEFAULT_LISTEN))
    cert = sec.path("tls_cert", base=base)
    key = sec.path("tls_key", base=base)
    if (cert is None) != (key is None):
        raise sec.error("tls_key" if key is None else "tls_cert",
                        "tls_cert and tls_key must be set together")
    body = sec.int("max_body_bytes", 1 << 20, minimum=1024)
    sec.finish()
    return ServerConfig(host=host, port=port, tls_cert=cert, tls_key=key, max_body_bytes=body)


def parse_listen(sec: Section, value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise sec.error("listen", f"must be HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise sec.error("listen", f"host must be an IP address or localhost, got {host!r}") \
                from None
    port = int(port_s)
    if not 0 < port < 65536:
        raise sec.error("listen", f"port must be 1-65535, got {port}")
    return host, port


def _api_keys(sec: Section) -> tuple[ApiKeyConfig, ...]:
    keys = []
    names: set[str] = set()
    for entry in sec.tables("api_keys"):
        name = entry.required_str("name")
        if name in names:
            raise entry.error("name", f"duplicate API key name {name!r}")
        names.add(name)
        digest = entry.required_str("sha256").lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise entry.error("sha256", "must be a 64-character hex SHA-256 digest "
                              "(see `aftd gen-apikey`)")
        allow = entry.networks("allow_from", LOOPBACK)
        entry.finish()
        keys.append(ApiKeyConfig(name=name, sha256=digest, allow_from=allow))
    sec.finish()
    return tuple(keys)


def _paths(sec: Section, base: Path) -> PathsConfig:
    state = sec.path("state_dir", base=base) or default_state_dir()
    scripts = sec.path("scripts_dir", base=base) or bundled_scripts_dir()
    sec.finish()
    return PathsConfig(state_dir=state, scripts_dir=scripts)


def _jobs(sec: Section) -> JobsConfig:
    cfg = JobsConfig(
        max_concurrent=sec.int("max_concurrent", 64, minimum=1, maximum=100_000),
        max_queued=sec.int("max_queued", 10_000, minimum=0),
        log_lines_per_job=sec.int("log_lines_per_job", 5_000, minimum=10),
        shutdown_grace_s=sec.float("shutdown_grace_s", 30.0, minimum=0),
        retention_days=sec.float("retention_days", 30.0, minimum=0),
    )
    sec.finish()
    return cfg


def _logging(sec: Section) -> LoggingConfig:
    cfg = LoggingConfig(
        level=sec.str("level", "info", choices=("debug", "info", "warning", "error")),
        format=sec.str("format", "json", choices=("json", "console")),
    )
    sec.finish()
    return cfg


def _metrics(sec: Section) -> MetricsConfig:
    cfg = MetricsConfig(open=sec.bool("open", False))
    sec.finish()
    return cfg


def _http(sec: Section, base: Path) -> HttpConfig:
    cfg = HttpConfig(ca_file=sec.path("ca_file", base=base),
                     timeout_s=sec.float("timeout_s", 30.0, minimum=0.1))
    sec.finish()
    return cfg


def _reports(sec: Section) -> ReportsConfig:
    cfg = ReportsConfig(
        deadline_s=sec.float("deadline_s", 86_400.0, minimum=1),
        initial_backoff_s=sec.float("initial_backoff_s", 1.0, minimum=0.01),
        max_backoff_s=sec.float("max_backoff_s", 300.0, minimum=0.01),
        timeout_s=sec.float("timeout_s", 30.0, minimum=0.1),
    )
    sec.finish()
    return cfg
