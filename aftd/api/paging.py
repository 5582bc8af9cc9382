"""List pages within a byte budget: rows are encoded one at a time and the page stops before
the response would outgrow ``server.max_page_bytes`` (always holding at least one row, so a
client can page through rows larger than the budget)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aftd import strictjson
from aftd.api.errors import Reply, encode
from aftd.api.responses import ResponseModel

__all__ = ["STORE_CHUNK", "Page", "fill_page"]

T = TypeVar("T")
# Rows are read from the store a few at a time, so a page never holds more than this many
# rows in memory whatever the client's ``limit``.
STORE_CHUNK = 25

# Room for the field only known when the page ends: its name and a cursor of up to 18 digits.
_CURSOR_ROOM = 40


class Page:
    """A page under construction: the ``envelope`` model, whose first field ``key`` is the
    list of rows, with its other fields given when the page ends."""

    def __init__(self, budget: int, envelope: type[ResponseModel], key: str,
                 known: Mapping[str, Any] | None = None) -> None:
        if next(iter(envelope.model_fields)) != key:
            raise ValueError(f"{envelope.__name__}: {key!r} is not its first field")
        self.budget = budget
        self.envelope = envelope
        self.key = key
        self._parts: list[str] = []
        values: dict[str, Any] = {key: [], **(known or {})}
        empty = envelope.model_construct(None, **values)
        self._size = len(encode(empty).encode()) + _CURSOR_ROOM

    @property
    def count(self) -> int:
        return len(self._parts)

    def add(self, row: ResponseModel) -> bool:
        """Append ``row`` unless the page is full; False means it was not added."""
        text = encode(row)
        size = len(text.encode()) + 1
        if self._parts and self._size + size > self.budget:
            return False
        self._parts.append(text)
        self._size += size
        return True

    def reply(self, **fields: Any) -> Reply:
        """The page as the envelope model with the rows and ``fields``; the envelope is
        validated (with no rows) and the rows, encoded already, are put in its list."""
        values: dict[str, Any] = {self.key: [], **fields}
        empty = self.envelope(**values)
        text = encode(empty)
        head = "{" + strictjson.dumps(self.envelope.model_fields[self.key].alias or self.key) + ":["
        if not text.startswith(head + "]"):
            raise ValueError(f"{self.envelope.__name__} does not start with its rows")
        body = head + ",".join(self._parts) + text[len(head):]
        return Reply(self.envelope, body)

    def reply_after(self, last: int | None, more: bool) -> Reply:
        """The page of a listing that :func:`fill_page` filled: ``nextCursor`` continues after
        ``last`` when ``more`` rows follow."""
        return self.reply(next_cursor=str(last) if more and last is not None else None)


async def fill_page(page: Page, limit: int, cursor: int | None,
                    fetch: Callable[[int, int | None], Awaitable[Sequence[T]]],
                    item: Callable[[T], Awaitable[ResponseModel]],
                    key: Callable[[T], int]) -> tuple[int | None, bool]:
    """Add up to ``limit`` rows to ``page``, read :data:`STORE_CHUNK` at a time with
    ``fetch(n, cursor)`` (at most ``n`` rows after ``cursor``, in page order); ``item`` makes a
    row's response model and ``key`` its cursor. Returns the last added row's key and whether
    more rows follow."""
    last = None
    while True:
        want = min(STORE_CHUNK, limit - page.count)
        rows = await fetch(want + 1, cursor)
        for row in rows[:want]:
            if not page.add(await item(row)):
                return last, True
            last = cursor = key(row)
        if len(rows) <= want:
            return last, False
        if page.count >= limit:
            return last, True
