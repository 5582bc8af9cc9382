"""``[auth]``: who may call the API — API keys stored as digests, each with the networks it may
be used from, its scopes and the scripts it may trigger."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, Strict, ValidationInfo, field_validator, model_validator

from aftd.configmodel import ConfigModel, InvalidKey, Networks, PositionalModel, unique_names
from aftd.scopes import ALL_SCOPES, ScopeName

__all__ = ["LOOPBACK", "LOOPBACK_CIDRS", "ApiKeyConfig", "AuthConfig"]

LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
LOOPBACK = tuple(ipaddress.ip_network(n) for n in LOOPBACK_CIDRS)
_HEX = frozenset("0123456789abcdef")


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
        for _ in unique_names(self.api_keys, "api_keys", "API key"):
            pass
        return self
