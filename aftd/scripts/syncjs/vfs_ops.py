"""``VirtualFSByName(name)`` and its methods, on the job's VFS handles (paths confined to each
VFS root, copies through the copy engine with progress and metrics).

``CopyToVFS``, ``MakeDir``, ``DelFile`` and ``Rename`` return ``{"ok", "error"}``: a failure is
a result the script checks with ``Ok()``, as in SyncJS. ``ListDir`` and ``Stat`` return data and
raise on failure (``Stat`` of a missing path is null).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from aftd.errors import AftdError
from aftd.scripts.context import JobContext
from aftd.scripts.syncjs.hostargs import HostCallError, text
from aftd.vfs.base import FileInfo, PathNotFoundError
from aftd.vfs.copy import Overwrite
from aftd.vfs.handle import VfsHandle

__all__ = ["VfsOps"]

_OVERWRITE = frozenset(typing.get_args(Overwrite))
# What a failed VFS operation raises (besides AftdError): the result carries its message.
_FAILURES = (AftdError, OSError, ValueError)


class VfsOps:
    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def _vfs(self, args: Mapping[str, Any], key: str = "vfs") -> VfsHandle:
        return self._ctx.vfs(text(args, key, "the VFS name"))

    async def open(self, args: Mapping[str, Any]) -> str:
        """Check the name; the script's VFS object carries it."""
        return self._vfs(args, "name").name

    async def copy(self, args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            src, dst = self._vfs(args, "src"), self._vfs(args, "dst")
            overwrite, verify = _copy_options(args.get("options"))
            result = await src.copy_to(text(args, "path", "CopyToVFS: path"), dst,
                                       text(args, "dir", "CopyToVFS: destination directory"),
                                       overwrite=overwrite, verify=verify)
        except _FAILURES as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "error": "", "files": result.files, "bytes": result.bytes}

    async def listdir(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        entries = await self._vfs(args).listdir(text(args, "path", "ListDir: path"))
        return [_entry(i) for i in sorted(entries, key=lambda i: i.name)]

    async def stat(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return _entry(await self._vfs(args).stat(text(args, "path", "Stat: path")))
        except PathNotFoundError:
            return None

    async def mkdir(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await _result(self._vfs(args).makedirs(text(args, "path", "MakeDir: path")))

    async def delete(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await _result(self._vfs(args).remove(text(args, "path", "DelFile: path")))

    async def rename(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await _result(self._vfs(args).rename(text(args, "from", "Rename: from"),
                                                    text(args, "to", "Rename: to")))


async def _result(op: typing.Awaitable[None]) -> dict[str, Any]:
    try:
        await op
    except _FAILURES as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "error": ""}


def _entry(info: FileInfo) -> dict[str, Any]:
    return {"name": info.name, "size": info.size, "isDir": info.is_dir, "mtime": info.mtime}


def _copy_options(raw: Any) -> tuple[Overwrite, typing.Literal["sha256"] | None]:
    """``CopyToVFS``'s optional 4th argument: ``{overwrite, verify}``. SyncJS copies replace
    an existing target, so ``overwrite`` defaults to ``"always"`` (Python's default is
    ``"never"``)."""
    options = raw if isinstance(raw, dict) else {}
    overwrite = options.get("overwrite", "always")
    if overwrite not in _OVERWRITE:
        raise HostCallError(f"CopyToVFS: overwrite must be one of {sorted(_OVERWRITE)}")
    verify = options.get("verify")
    if verify not in (None, "sha256"):
        raise HostCallError('CopyToVFS: verify must be "sha256" or absent')
    return typing.cast(Overwrite, overwrite), typing.cast(typing.Literal["sha256"] | None,
                                                          verify)
