"""``[secrets]``, ``[secrets.vault]`` and ``[secrets.file]`` sections.

Only file *paths* and settings live here, never secret values, so the reprs are safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aftd.configmodel import (
    ConfigModel,
    InvalidKey,
    OptionalPath,
    PositionalModel,
    RequiredPath,
    Section,
    Strings,
    from_file,
)
from aftd.redact import DEFAULT_MAX_AGE_S, DEFAULT_MAX_VALUES

__all__ = ["PROVIDERS", "FileConfig", "SecretsConfig", "VaultConfig", "parse_secrets_section"]

PROVIDERS = ("vault", "file", "env")


class VaultConfig(ConfigModel):
    """How to reach Vault/OpenBao and read KV v2 secrets."""

    url: str = Field(description="the server's address", examples=["https://127.0.0.1:8200"])
    auth: Literal["token", "approle"] = Field("token", description=(
        '"token" (token_file, else $VAULT_TOKEN) or "approle" (role_id_file and '
        "secret_id_file, read at every login)"))
    token_file: OptionalPath = Field(None, description="token auth: a file holding the token",
                                     examples=["/etc/aftd/vault-token"])
    role_id_file: OptionalPath = Field(None, description="approle auth: the role id's file",
                                       examples=["/etc/aftd/vault-role-id"])
    secret_id_file: OptionalPath = Field(None, description="approle auth: the secret id's file",
                                         examples=["/etc/aftd/vault-secret-id"])
    approle_mount: str = Field("approle", description="where the AppRole auth method is mounted")
    mount: str = Field("secret", description="the KV v2 secrets engine's mount")
    prefix: str = Field("aftd/", description="prepended to every secret name")
    namespace: str = Field("", description="Vault Enterprise namespace; empty: none")
    ca_file: OptionalPath = Field(None, description="PEM CA bundle; empty: the system's CAs",
                                  examples=["/etc/aftd/vault-ca.pem"])
    client_cert: OptionalPath = Field(None, description="TLS client certificate (with "
                                      "client_key)", examples=["/etc/aftd/vault-client.pem"])
    client_key: OptionalPath = Field(None, description="TLS client key (with client_cert)",
                                     examples=["/etc/aftd/vault-client.key"])
    verify: bool = Field(True, description="verify the server's certificate")
    timeout_s: float = Field(10.0, ge=0.1, description="per request")
    renew: bool = Field(True, description="renew the token once renew_fraction of its TTL has "
                        "passed; log in again if renewal fails")
    renew_fraction: float = Field(0.67, ge=0.1, le=0.95, description="see renew")
    renew_increment_s: int = Field(0, ge=0, description="the TTL to ask for at renewal; 0: the "
                                   "server chooses")
    max_parallel: int = Field(8, ge=1, le=256, description="concurrent Vault calls (each takes "
                              "a thread of the secrets pool)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("approle_mount", "mount")
    @classmethod
    def _segment(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            default = cls.model_fields[str(info.field_name)].default
            raise ValueError(f"must be a mount path like {default!r}")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.lstrip("/")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value

    @model_validator(mode="after")
    def _check(self) -> VaultConfig:
        if self.auth == "approle":
            for key in ("role_id_file", "secret_id_file"):
                if getattr(self, key) is None:
                    raise InvalidKey(key, 'is required when auth = "approle"')
        elif self.role_id_file or self.secret_id_file:
            bad = "role_id_file" if self.role_id_file else "secret_id_file"
            raise InvalidKey(bad, 'only applies when auth = "approle"')
        if (self.client_cert is None) != (self.client_key is None):
            raise InvalidKey("client_key" if self.client_key is None else "client_cert",
                             "client_cert and client_key must be set together")
        if self.ca_file is not None and not self.verify:
            raise InvalidKey("verify", "is false but ca_file is set; drop one of them")
        return self


class FileConfig(PositionalModel):
    """A TOML file of secrets, refused unless its mode is 0600 or stricter."""

    POSITIONAL = ("path",)

    path: RequiredPath = Field(description="the secrets file (a table of name = value)",
                               examples=["/etc/aftd/secrets.toml"])


class SecretsConfig(ConfigModel):
    """Where ``job.secret(name)`` looks, in order, and how long values stay cached and masked."""

    # The default depends on the tables present (see _default_order).
    order: Strings = Field(default_factory=lambda: ("env",), examples=[PROVIDERS], description=(
        'the providers to ask, in this order (default: every configured one of "vault", '
        '"file", "env", in that order)'))
    cache_ttl_s: float = Field(30.0, ge=0, description="a resolved value is reused this long")
    mask_ttl_s: float = Field(DEFAULT_MAX_AGE_S, ge=60, description=(
        "resolved values stay masked in logs this long after their last resolution"))
    mask_max_values: int = Field(DEFAULT_MAX_VALUES, ge=16, le=1_000_000, description=(
        "and at most this many (the least recently resolved are dropped first)"))
    vault: VaultConfig | None = Field(None, description="KV v2 on Vault or OpenBao")
    file: FileConfig | None = Field(None, description="a local TOML file of secrets")

    @model_validator(mode="before")
    @classmethod
    def _default_order(cls, data: Any) -> Any:
        if isinstance(data, dict) and "order" not in data:
            # Every configured provider, in the documented priority.
            configured = [p for p in PROVIDERS if p == "env" or data.get(p) is not None]
            data = {**data, "order": tuple(configured)}
        return data

    @model_validator(mode="after")
    def _check(self) -> SecretsConfig:
        configured = {"vault": self.vault is not None, "file": self.file is not None, "env": True}
        for i, p in enumerate(self.order):
            if p not in PROVIDERS:
                raise InvalidKey(f"order[{i}]",
                                 f"unknown provider {p!r}; known: {', '.join(PROVIDERS)}")
            if self.order.index(p) != i:
                raise InvalidKey(f"order[{i}]", f"provider {p!r} listed twice")
            if not configured[p]:
                raise InvalidKey(f"order[{i}]", f"provider {p!r} needs a [secrets.{p}] table")
        if not self.order:
            raise InvalidKey("order", "must name at least one provider")
        if self.mask_ttl_s < self.cache_ttl_s and from_file():
            # A value handed out from the cache must still be masked. (Python callers may build
            # the opposite on purpose: the tests of masking age values out of a long cache.)
            raise InvalidKey("mask_ttl_s", f"must be at least cache_ttl_s "
                             f"({self.cache_ttl_s:g}), got {self.mask_ttl_s:g}")
        return self


def parse_secrets_section(sec: Section, base: Path | None = None) -> SecretsConfig:
    """Read ``[secrets]``; relative paths resolve against ``base`` (default: the config's dir)."""
    cfg: SecretsConfig = sec.validate(SecretsConfig, base)
    return cfg
