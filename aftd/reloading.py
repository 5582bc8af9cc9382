"""What a reload replaces — the backends jobs start with (the secret chain and the VFS pool) —
and which changed settings it cannot apply without a restart."""

from __future__ import annotations

from dataclasses import dataclass

from aftd.config import Config
from aftd.metrics import Metrics
from aftd.secrets.chain import SecretChain
from aftd.vfs.registry import VfsPool

__all__ = ["Backends", "build_backends", "restart_only"]


@dataclass
class Backends:
    """The reloadable resources a job is started with."""

    secrets: SecretChain
    vfs: VfsPool

    async def aclose(self) -> None:
        await self.vfs.aclose()
        await self.secrets.aclose()


async def build_backends(cfg: Config, metrics: Metrics) -> Backends:
    def on_lookup(_name: str, provider: str | None) -> None:
        if provider:
            metrics.count_secret_lookup(provider)
        else:
            metrics.count_secret_failure()

    secrets = SecretChain(cfg.secrets, on_lookup=on_lookup)
    await secrets.start()
    return Backends(secrets=secrets, vfs=VfsPool(cfg.vfs, secrets))


def restart_only(old: Config, new: Config) -> list[str]:
    """The settings that changed between ``old`` and ``new`` that only a restart applies."""
    checks = {"server": old.server != new.server, "paths.state_dir":
              old.paths.state_dir != new.paths.state_dir, "reports": old.reports != new.reports,
              "store": old.store != new.store, "host": old.host != new.host}
    return [k for k, changed in checks.items() if changed]
