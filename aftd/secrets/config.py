"""``[secrets]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from aftd.configparse import Section

__all__ = ["SecretsConfig", "parse_secrets_section"]

PROVIDERS = ("vault", "file", "env")


@dataclass(frozen=True)
class SecretsConfig:
    order: tuple[str, ...] = ("env",)
    cache_ttl_s: float = 30.0


def parse_secrets_section(sec: Section) -> SecretsConfig:
    order = sec.str_list("order", ("env",))
    for i, p in enumerate(order):
        if p not in PROVIDERS:
            raise sec.error(f"order[{i}]", f"unknown provider {p!r}; known: {', '.join(PROVIDERS)}")
    ttl = sec.float("cache_ttl_s", 30.0, minimum=0)
    return SecretsConfig(order=order, cache_ttl_s=ttl)
