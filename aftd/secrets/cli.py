"""``aftd secrets check NAME...``: which provider resolves each name (never the value)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from aftd import redact
from aftd.errors import SecretError
from aftd.secrets.base import parse_name
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig

__all__ = ["CheckResult", "check_names", "run_check"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    provider: str | None = None  # set when the name resolved
    error: str | None = None  # set when it did not (already free of secret values)

    @property
    def ok(self) -> bool:
        return self.provider is not None

    def line(self) -> str:
        if self.provider is not None:
            return f"{self.name}: ok ({self.provider})"
        return f"{self.name}: FAILED: {self.error}"


async def check_names(chain: SecretChain, names: Sequence[str]) -> list[CheckResult]:
    """Resolve every name concurrently; results are in the order of ``names``."""
    return list(await asyncio.gather(*(_check_one(chain, n) for n in names)))


async def _check_one(chain: SecretChain, name: str) -> CheckResult:
    try:
        provider = await chain.which(name)
    except SecretError as exc:
        return CheckResult(name, error=redact.scrub(str(exc)))
    if provider is None:
        parsed = parse_name(name)
        tried = ", ".join(f"{p.name} ({p.where(parsed)})" for p in chain.providers)
        return CheckResult(name, error=f"not found; tried {tried or 'no providers'}")
    return CheckResult(name, provider=provider)


def run_check(cfg: SecretsConfig, names: Sequence[str], out: TextIO) -> int:
    """Print one line per name; 0 if every name resolves, 1 otherwise (or if none given)."""
    if not names:
        out.write("aftd secrets check: name at least one secret\n")
        return 1
    results = asyncio.run(_run(cfg, names))
    for result in results:
        out.write(redact.scrub(result.line()) + "\n")
    return 0 if all(r.ok for r in results) else 1


async def _run(cfg: SecretsConfig, names: Sequence[str]) -> list[CheckResult]:
    chain = SecretChain(cfg)
    try:
        return await check_names(chain, names)
    except SecretError as exc:  # e.g. the secrets file is refused before any lookup
        return [CheckResult(n, error=redact.scrub(str(exc))) for n in names]
    finally:
        await chain.aclose()
