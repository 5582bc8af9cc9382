"""The VFS handle a script gets from ``job.vfs(name)``: the backend's operations plus ``copy_to``.

Backends (:mod:`aftd.vfs.base`) only store and fetch bytes; copying between two of them is the
copy engine's work (:mod:`aftd.vfs.copy`). The handle joins the two for scripts, so the backend
protocol knows nothing of copying and ``vfs/`` has no import cycle. It also counts each finished
``copy_to`` in the transfer metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal

from aftd import progress
from aftd.errors import TransferError
from aftd.vfs.base import FileInfo, ReadStream, Vfs, WriteStream
from aftd.vfs.copy import OnError, Overwrite, copy_tree
from aftd.vfs.result import CopyResult

__all__ = ["VfsHandle"]


class VfsHandle:
    """One configured filesystem as a script sees it.

    Paths are relative to the VFS root (``"inbound/x.csv"``; ``""`` is the root); a path that
    would leave the root raises :class:`~aftd.vfs.base.PathEscapeError`. Every error names the
    VFS and the path.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: Vfs) -> None:
        self._backend = backend

    def __repr__(self) -> str:
        return repr(self._backend)

    @property
    def name(self) -> str:
        """The VFS's name in the config (``[vfs.NAME]``)."""
        return self._backend.name

    async def stat(self, path: str) -> FileInfo:
        """What ``path`` is; raises :class:`~aftd.vfs.base.PathNotFoundError` when missing."""
        return await self._backend.stat(path)

    async def listdir(self, path: str) -> list[FileInfo]:
        """The entries of a directory (no ``.``/``..``), unsorted; links are listed as links."""
        return await self._backend.listdir(path)

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        return await self._backend.exists(path)

    async def makedirs(self, path: str) -> None:
        """Create the directory and its parents; an existing directory is fine."""
        await self._backend.makedirs(path)

    async def remove(self, path: str) -> None:
        """Remove a file or an empty directory."""
        await self._backend.remove(path)

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        """Rename within this VFS; with ``overwrite`` an existing ``dst`` file is replaced."""
        await self._backend.rename(src, dst, overwrite=overwrite)

    async def checksum(self, path: str, algo: str) -> str:
        """The hex digest of a stored file, where the backend computes it (``"sha256"``)."""
        return await self._backend.checksum(path, algo)

    def open_read(self, path: str, offset: int = 0) -> AbstractAsyncContextManager[ReadStream]:
        """Stream the file from ``offset``: ``async with`` it, then ``await r.read()`` until
        it returns ``b""``."""
        return self._backend.open_read(path, offset)

    def open_write(self, path: str, offset: int = 0) -> AbstractAsyncContextManager[WriteStream]:
        """Create (or truncate to ``offset``) and stream into the file under its final name;
        ``copy_to`` is the way to publish a file atomically."""
        return self._backend.open_write(path, offset)

    async def copy_to(
        self,
        src_path: str,
        dst_vfs: VfsHandle | Vfs,
        dst_dir: str,
        *,
        overwrite: Overwrite = "never",
        verify: Literal["sha256"] | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        transfers: int | Literal["auto"] = "auto",
        follow_symlinks: bool = False,
        on_error: OnError = "stop",
    ) -> CopyResult:
        """Copy the file or directory ``src_path`` into ``dst_dir`` of ``dst_vfs`` (like
        ``cp -r``: copying ``"reports/2024"`` into ``"inbox"`` makes ``inbox/2024``).

        Bytes land under a temporary name and are renamed into place after the last byte and
        the checks. ``overwrite``: ``"never"`` (an existing target is an error), ``"always"``,
        ``"if_size_differs"``, ``"if_newer"``. ``verify="sha256"`` hashes while streaming.
        ``include``/``exclude`` are globs on the path inside the copied directory (or the
        file's name). ``transfers`` files are copied at once; ``"auto"`` starts at 4 and
        grows while throughput rises, up to the VFS' ``max_files_in_flight`` (SFTP). Symlinks
        inside a tree are skipped (and listed in the result) unless ``follow_symlinks``, which
        follows those that stay inside the root. ``on_error="stop"`` raises the first failure,
        its ``delivered`` listing what had arrived; ``"continue"`` attempts every file and
        lists failures in :attr:`CopyResult.failed`.
        """
        dst = dst_vfs._backend if isinstance(dst_vfs, VfsHandle) else dst_vfs
        try:
            result = await copy_tree(
                self._backend, src_path, dst, dst_dir, overwrite=overwrite, verify=verify,
                include=include, exclude=exclude, transfers=transfers,
                follow_symlinks=follow_symlinks, on_error=on_error,
            )
        except TransferError:
            progress.transfer_finished(self.name, dst.name, 0, 0, ok=False)
            raise
        progress.transfer_finished(self.name, dst.name, result.files, result.bytes, ok=True)
        if result.failed:  # on_error="continue": what was copied counts, and so does the failure
            progress.transfer_finished(self.name, dst.name, 0, 0, ok=False)
        return result
