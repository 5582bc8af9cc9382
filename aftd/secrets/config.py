"""``[secrets]``, ``[secrets.vault]`` and ``[secrets.file]`` sections.

Only file *paths* and settings live here, never secret values, so the dataclass reprs are safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aftd.configparse import Section

__all__ = ["PROVIDERS", "FileConfig", "SecretsConfig", "VaultConfig", "parse_secrets_section"]

PROVIDERS = ("vault", "file", "env")
AUTH_METHODS = ("token", "approle")
_EMBEDDED = "<embedded defaults>"


@dataclass(frozen=True)
class VaultConfig:
    """How to reach Vault/OpenBao and read KV v2 secrets."""

    url: str
    auth: str = "token"
    # token auth: this file, else the VAULT_TOKEN environment variable.
    token_file: Path | None = None
    # approle auth: role id and secret id are each read from a file at every login.
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    approle_mount: str = "approle"
    mount: str = "secret"
    prefix: str = "aftd/"
    namespace: str = ""
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True
    timeout_s: float = 10.0
    # Renew the token once this fraction of its TTL has passed; re-login if renewal fails.
    renew: bool = True
    renew_fraction: float = 0.67
    renew_increment_s: int = 0  # 0: let the server choose the new TTL
    max_parallel: int = 8  # concurrent hvac calls (each takes a worker thread)


@dataclass(frozen=True)
class FileConfig:
    path: Path


@dataclass(frozen=True)
class SecretsConfig:
    order: tuple[str, ...] = ("env",)
    cache_ttl_s: float = 30.0
    vault: VaultConfig | None = None
    file: FileConfig | None = field(default=None)


def parse_secrets_section(sec: Section, base: Path | None = None) -> SecretsConfig:
    """Read ``[secrets]``; relative paths resolve against ``base`` (default: the config's dir)."""
    if base is None:
        base = _base_of(sec.file)
    vault = _vault(sec.table("vault"), base) if sec.has("vault") else None
    file = _file(sec.table("file"), base) if sec.has("file") else None
    order = _order(sec, vault, file)
    ttl = sec.float("cache_ttl_s", 30.0, minimum=0)
    sec.finish()
    return SecretsConfig(order=order, cache_ttl_s=ttl, vault=vault, file=file)


def _base_of(file: str) -> Path:
    if file and not file.startswith("<"):
        return Path(file).resolve().parent
    return Path.cwd()


def _order(sec: Section, vault: VaultConfig | None, file: FileConfig | None) -> tuple[str, ...]:
    configured = {"vault": vault is not None, "file": file is not None, "env": True}
    if not sec.has("order"):
        # Default: every configured provider, in the documented priority.
        return tuple(p for p in PROVIDERS if configured[p])
    order = sec.str_list("order")
    for i, p in enumerate(order):
        if p not in PROVIDERS:
            raise sec.error(f"order[{i}]", f"unknown provider {p!r}; known: {', '.join(PROVIDERS)}")
        if order.index(p) != i:
            raise sec.error(f"order[{i}]", f"provider {p!r} listed twice")
        if not configured[p]:
            raise sec.error(f"order[{i}]", f"provider {p!r} needs a [secrets.{p}] table")
    if not order:
        raise sec.error("order", "must name at least one provider")
    return order


def _vault(sec: Section, base: Path) -> VaultConfig:
    url = sec.required_str("url")
    if not url.startswith(("http://", "https://")):
        raise sec.error("url", f"must start with http:// or https://, got {url!r}")
    auth = sec.str("auth", "token", choices=AUTH_METHODS)
    cfg = VaultConfig(
        url=url.rstrip("/"),
        auth=auth,
        token_file=sec.path("token_file", base=base),
        role_id_file=sec.path("role_id_file", base=base),
        secret_id_file=sec.path("secret_id_file", base=base),
        approle_mount=_segment(sec, "approle_mount", "approle"),
        mount=_segment(sec, "mount", "secret"),
        prefix=_prefix(sec),
        namespace=sec.str("namespace", ""),
        ca_file=sec.path("ca_file", base=base),
        client_cert=sec.path("client_cert", base=base),
        client_key=sec.path("client_key", base=base),
        verify=sec.bool("verify", True),
        timeout_s=sec.float("timeout_s", 10.0, minimum=0.1),
        renew=sec.bool("renew", True),
        renew_fraction=sec.float("renew_fraction", 0.67, minimum=0.1, maximum=0.95),
        renew_increment_s=sec.int("renew_increment_s", 0, minimum=0),
        max_parallel=sec.int("max_parallel", 8, minimum=1, maximum=256),
    )
    _check_vault(sec, cfg)
    sec.finish()
    return cfg


def _check_vault(sec: Section, cfg: VaultConfig) -> None:
    if cfg.auth == "approle":
        for key in ("role_id_file", "secret_id_file"):
            if getattr(cfg, key) is None:
                raise sec.error(key, 'is required when auth = "approle"')
    elif cfg.role_id_file or cfg.secret_id_file:
        bad = "role_id_file" if cfg.role_id_file else "secret_id_file"
        raise sec.error(bad, 'only applies when auth = "approle"')
    if (cfg.client_cert is None) != (cfg.client_key is None):
        raise sec.error("client_key" if cfg.client_key is None else "client_cert",
                        "client_cert and client_key must be set together")
    if cfg.ca_file is not None and not cfg.verify:
        raise sec.error("verify", "is false but ca_file is set; drop one of them")


def _segment(sec: Section, name: str, default: str) -> str:
    value = sec.str(name, default).strip("/")
    if not value or ".." in value.split("/"):
        raise sec.error(name, f"must be a mount path like {default!r}")
    return value


def _prefix(sec: Section) -> str:
    value = sec.str("prefix", "aftd/").lstrip("/")
    if ".." in value.split("/"):
        raise sec.error("prefix", "must not contain '..'")
    return value


def _file(sec: Section, base: Path) -> FileConfig:
    path = sec.path("path", base=base)
    if path is None:
        raise sec.error("path", "is required")
    sec.finish()
    return FileConfig(path=path)
