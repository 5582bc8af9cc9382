"""Bytes that arrive in small pieces (a reader's chunks) and leave in large ones (upload blocks,
chunks of a resumable upload), copied once on the way: the pieces are kept as they came and
joined only when a large piece is taken."""

from __future__ import annotations

from collections import deque

__all__ = ["Pieces"]


class Pieces:
    """A FIFO of bytes: :meth:`add` small pieces, :meth:`take` a large one."""

    def __init__(self) -> None:
        self._parts: deque[bytes | memoryview] = deque()
        self.size = 0

    def add(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self.size += len(data)

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes (all there are, if fewer), in one new bytes object."""
        out: list[bytes | memoryview] = []
        need = min(n, self.size)
        self.size -= need
        while need:
            part = self._parts.popleft()
            if len(part) > need:  # split: the rest stays, as a view of the same buffer
                self._parts.appendleft(memoryview(part)[need:])
                part = memoryview(part)[:need]
            out.append(part)
            need -= len(part)
        if len(out) == 1 and isinstance(out[0], bytes):
            return out[0]
        return b"".join(out)

    def take_all(self) -> bytes:
        return self.take(self.size)
