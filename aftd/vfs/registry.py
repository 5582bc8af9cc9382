"""Backend registry and the pool of configured VFS shared by every job.

A config ``type`` maps to a backend module that is imported only when first used (after
fsspec's registry), so a missing optional dependency only matters to configs that need it, and
the error says which package to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aftd.errors import TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import UnknownVfsError, Vfs
from aftd.vfs.config import VfsConfig

__all__ = ["BACKENDS", "Backend", "VfsPool", "load_backend"]


@dataclass(frozen=True)
class Backend:
    module: str  # exposes create(cfg) or create(cfg, secrets)
    package: str  # the Python package the backend needs
    needs_secrets: bool = False
    install: str = ""  # what to `pip install` when the import fails (default: the package)


BACKENDS: dict[str, Backend] = {
    "local": Backend("aftd.vfs.local", "aftd"),
    "sftp": Backend("aftd.vfs.sftp", "asyncssh", needs_secrets=True),
    "ftp": Backend("aftd.vfs.ftp", "aftd", needs_secrets=True),
    "s3": Backend("aftd.vfs.s3", "aiobotocore", needs_secrets=True, install="'aftd[s3]'"),
    "azure": Backend("aftd.vfs.azure", "azure-storage-blob", needs_secrets=True,
                     install="'aftd[azure]'"),
    "gcs": Backend("aftd.vfs.gcs", "PyJWT", needs_secrets=True, install="'aftd[gcs]'"),
}


def load_backend(vtype: str) -> Any:
    spec = BACKENDS.get(vtype)
    if spec is None:
        raise TransferError(f"unknown VFS type {vtype!r}; known types: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        raise TransferError(
            f"VFS type {vtype!r} needs the Python package {spec.package!r} "
            f"(pip install {spec.install or spec.package}): {exc}"
        ) from None


class VfsPool:
    """Named VFS objects built on first use; owns their connections until :meth:`aclose`."""

    def __init__(self, configs: Mapping[str, VfsConfig], secrets: SecretResolver) -> None:
        self._configs = dict(configs)
        self._secrets = secrets
        self._live: dict[str, Vfs] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._configs)

    @property
    def configs(self) -> Mapping[str, VfsConfig]:
        """The entries this pool builds from (a worker process builds its own pool)."""
        return dict(self._configs)

    def get(self, name: str) -> Vfs:
        vfs = self._live.get(name)
        if vfs is not None:
            return vfs
        cfg = self._configs.get(name)
        if cfg is None:
            known = ", ".join(self.names) or "none"
            raise UnknownVfsError(f"unknown VFS {name!r}; configured: {known}", vfs=str(name))
        module = load_backend(cfg.type)
        if BACKENDS[cfg.type].needs_secrets:
            vfs = module.create(cfg, self._secrets)
        else:
            vfs = module.create(cfg)
        if not isinstance(vfs, Vfs):
            raise TransferError(f"backend {cfg.type!r} did not build a Vfs", vfs=name)
        self._live[name] = vfs
        return vfs

    async def aclose(self) -> None:
        live, self._live = self._live, {}
        for vfs in live.values():
            await vfs.aclose()
