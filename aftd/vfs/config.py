"""``[vfs.NAME]`` entries: the keys every entry has, and the registry of backend types.

Each backend type declares its own keys in a module of its own (``aftd/vfs/<type>_config.py``)
that imports no third-party package, so a config loads without the optional dependencies of
backends it does not use. A new backend adds such a module and one line to :data:`VFS_TYPES`
(and its implementation to :data:`aftd.vfs.registry.BACKENDS`). Errors name the entry and the
key (``vfs.NAME.key``). Only secret *names* are stored here; values are resolved at connect
time through the :class:`~aftd.vfs.base.SecretResolver`, so a rotated secret is picked up by
the next connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema

from aftd.configmodel import PositionalModel, Section, TypeRegistry, inject_names

__all__ = ["STREAMS_MIN_SIZE", "VFS_TYPES", "ConnectTimeoutS", "StreamsMinSize", "VfsConfig",
           "VfsEntries", "parse_vfs_section", "vfs_tables"]

VFS_TYPES = TypeRegistry("vfs", {
    "local": "aftd.vfs.local_config:LocalVfsConfig",
    "sftp": "aftd.vfs.sftp_config:SftpVfsConfig",
    "ftp": "aftd.vfs.ftp_config:FtpVfsConfig",
    "s3": "aftd.vfs.s3_config:S3VfsConfig",
    "azure": "aftd.vfs.azure_config:AzureVfsConfig",
    "gcs": "aftd.vfs.gcs_config:GcsVfsConfig",
})

# Keys several backends have, with the same bounds; each backend's field gives the default and,
# where it says more than this, its own description.
# Seconds to connect (what connecting includes, a TLS handshake or a login, is the backend's).
ConnectTimeoutS = Annotated[float, Field(ge=0.1, description="connect within this")]
# Bytes from which one file may move as parallel ranged streams.
STREAMS_MIN_SIZE = 64 << 20
StreamsMinSize = Annotated[int, Field(ge=16 << 20)]


class VfsConfig(PositionalModel):
    """The keys of every ``[vfs.NAME]`` entry; each backend type's model adds its own."""

    POSITIONAL = ("name", "type", "root")

    # The entry's key under [vfs] (set by the loader), not a key of its own.
    name: SkipJsonSchema[str] = Field("", exclude=True)
    type: str = Field(description="the backend")
    root: str = Field("", description="the directory every path of this VFS stays inside")

    @property
    def options(self) -> dict[str, Any]:
        """The backend's own keys (everything but name, type and root)."""
        return self.model_dump(exclude={"type", "root"})


VfsEntries = Annotated[dict[str, Annotated[VfsConfig, VFS_TYPES]], BeforeValidator(inject_names)]


def parse_vfs_section(sec: Section) -> dict[str, VfsConfig]:
    """Read ``[vfs]``: each entry validated by the model of its ``type``."""
    entries: dict[str, VfsConfig] = sec.validate(VfsEntries)
    return entries


def vfs_tables(configs: Mapping[str, VfsConfig]) -> dict[str, dict[str, Any]]:
    """The entries as TOML-like tables again (for a worker process, which parses them back)."""
    return {name: cfg.model_dump(mode="json") for name, cfg in configs.items()}
