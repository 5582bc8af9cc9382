"""Process-wide registry of secret values that must never be shown.

The secrets layer registers every value it resolves (again at every resolution, cache hits
included); logging, the job log store, API responses and error messages pass text through
:func:`scrub` before it leaves the process.

* A value is masked in every form it is likely to take on the way out: as it is, line by line,
  ``repr``-escaped (str and UTF-8 bytes, either quote style, ``ascii()``), JSON-escaped and
  URL-quoted, and one level of ``repr``/JSON escaping on top of those (an exception message
  logged inside a JSON document). See :func:`forms_of`.
* The set is bounded: a value that has not been registered again for ``max_age_s`` is dropped,
  and beyond ``max_values`` the least recently registered are dropped first (a warning counts
  them). Credentials a component holds for as long as it runs (the Vault token) are *pinned*
  and never dropped until released.
* Matching is Aho-Corasick (``pyahocorasick``): one pass over the text whatever the number of
  patterns; the automaton is rebuilt only after the set changed, at the next scrub.
  ``bench/redact_bench.py`` compares it with a regular-expression alternation, whose cost
  grows with every registered value.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick
import structlog

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_VALUES",
    "MASK",
    "REDACTOR",
    "Redactor",
    "configure",
    "forms_of",
    "pin",
    "register",
    "release",
    "scrub",
    "scrub_obj",
    "scrub_value",
]

log = structlog.get_logger(__name__)

MASK = "***"
# Very short values would mask ordinary words ("a", "on"); they are not credentials anyway.
_MIN_LEN = 4
# A job may hold a value it resolved once for as long as it runs (a day by default), so a
# value stays masked that long after its last resolution: many times the lookup cache's TTL.
DEFAULT_MAX_AGE_S = 86400.0
DEFAULT_MAX_VALUES = 4096
# Expiry is checked at most this often from the scrub path (a clock read per scrub).
_SWEEP_EVERY_S = 30.0

# URL builders leave different characters unquoted in each part of a URL (RFC 3986 allows the
# sub-delimiters in user info, path and fragment), so quoted forms are made with each of these
# "safe" sets: Python's defaults, JavaScript's encodeURIComponent and encodeURI, and what yarl
# (aiohttp's URL type) keeps in user info, path, query values and fragments.
_SUB_DELIMS = "!$&'()*+,;="
_URL_SAFE_SETS = ("", "/", "!'()*", ";,/?:@&=+$!'()*#", _SUB_DELIMS, _SUB_DELIMS + ":@",
                  _SUB_DELIMS + ":@/", _SUB_DELIMS + ":@/?", "!$'()*,/:?@")


# -- the forms a value takes on the way out --------------------------------------------------

def _str_reprs(v: str) -> set[str]:
    # repr() quotes with ' and escapes it unless the text has a ' and no ": cover both styles,
    # since a secret inside a longer string takes the style the whole string gets.
    forms = {repr("'\"" + v)[4:-1], ascii("'\"" + v)[4:-1]}
    if '"' not in v:
        forms |= {repr("'" + v)[2:-1], ascii("'" + v)[2:-1]}
    return forms


def _bytes_reprs(v: str) -> set[str]:
    raw = v.encode("utf-8", "surrogatepass")
    forms = {repr(b"'\"" + raw)[5:-1]}
    if b'"' not in raw:
        forms.add(repr(b"'" + raw)[3:-1])
    return forms


def _json_forms(v: str) -> set[str]:
    return {json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1]}


def _url_forms(v: str) -> set[str]:
    forms = {quote(v, safe=s) for s in _URL_SAFE_SETS}
    return forms | {quote_plus(v, safe=s) for s in _URL_SAFE_SETS}


def forms_of(value: str) -> frozenset[str]:
    """Every text form of ``value`` to mask (the value itself, its lines, escaped forms)."""
    parts = {value, *(line.strip() for line in value.splitlines())}
    forms: set[str] = set()
    for part in parts:
        first = {part} | _str_reprs(part) | _bytes_reprs(part) | _json_forms(part)
        # One more level: a repr'd or JSON-escaped message inside a repr or a JSON document.
        second = {f for g in first for f in _str_reprs(g) | _json_forms(g)}
        forms |= first | second | _url_forms(part)
    return frozenset(f for f in forms if len(f) >= _MIN_LEN)


# -- the registry ------------------------------------------------------------------------------

@dataclass
class _Known:
    forms: frozenset[str]
    seen: float
    pins: int = 0


class Redactor:
    """Holds the known secret values and replaces them in text (thread-safe)."""

    def __init__(self, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 max_values: int = DEFAULT_MAX_VALUES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.max_values = max_values
        self.clock = clock
        self._known: dict[str, _Known] = {}  # insertion order = least recently registered first
        self._automaton: Any = None  # None: nothing to mask
        self._dirty = False
        self._last_sweep = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Redactor(values={len(self._known)}, max_age_s={self.max_age_s})"

    def __len__(self) -> int:
        return len(self._known)

    def configure(self, *, max_age_s: float, max_values: int) -> None:
        """Apply new bounds (the daemon's ``[secrets]`` settings); drops what they exclude."""
        with self._lock:
            self.max_age_s, self.max_values = max_age_s, max_values
            evicted = self._sweep_locked()
        _report_evicted(evicted, max_values)

    def register(self, value: str, *, pin: bool = False) -> None:
        """Mask ``value`` from now on; registering it again restarts its age.

        ``pin=True`` keeps it regardless of age and count until :meth:`release`.
        """
        if not isinstance(value, str) or len(value) < _MIN_LEN:
            return
        evicted = 0
        with self._lock:
            known = self._known.pop(value, None)
            if known is None:
                known = _Known(forms_of(value), self.clock())
                self._dirty = True
            known.seen = self.clock()
            known.pins += 1 if pin else 0
            self._known[value] = known  # moved to the most recent end
            if len(self._known) > self.max_values:
                evicted = self._sweep_locked()
        _report_evicted(evicted, self.max_values)

    def release(self, value: str) -> None:
        """Undo one ``register(value, pin=True)``; the value then ages like any other."""
        with self._lock:
            known = self._known.get(value)
            if known is not None and known.pins > 0:
                known.pins -= 1
                known.seen = self.clock()

    def scrub(self, text: str) -> str:
        """``text`` with every registered form replaced by :data:`MASK`."""
        return _scrub_with(self.current(), text) if text else text

    def scrub_obj(self, obj: Any) -> Any:
        """A copy of a JSON-like object with every string (and key) scrubbed; numbers and
        other leaves are kept as they are, so a response still matches its schema."""
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, Mapping):
            return {self.scrub(str(k)): self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.scrub_obj(v) for v in obj]
        return obj

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._automaton, self._dirty = None, False

    # -- internals ----------------------------------------------------------------------------

    def current(self) -> Any:
        """The automaton of every form to mask now (``None``: nothing to mask); rebuilt here
        when the set changed, so a burst of registrations costs one build."""
        now = self.clock()
        evicted = 0
        if self._dirty or self._sweep_due(now):
            with self._lock:
                if self._sweep_due(now):
                    evicted = self._sweep_locked()
                if self._dirty:
                    self._automaton, self._dirty = _build(self._known.values()), False
            _report_evicted(evicted, self.max_values)
        return self._automaton

    def _sweep_due(self, now: float) -> bool:
        elapsed = now - self._last_sweep
        return elapsed >= min(_SWEEP_EVERY_S, self.max_age_s / 4) or elapsed < 0

    def _sweep_locked(self) -> int:
        """Drop values older than ``max_age_s``, then the oldest beyond ``max_values``;
        returns how many were dropped for the count (not the age)."""
        now = self._last_sweep = self.clock()
        horizon = now - self.max_age_s
        stale = [v for v, k in self._known.items() if not k.pins and k.seen < horizon]
        over = len(self._known) - len(stale) - self.max_values
        evicted: list[str] = []
        if over > 0:
            stale_set = set(stale)
            oldest = (v for v, k in self._known.items() if not k.pins and v not in stale_set)
            evicted = [v for _, v in zip(range(over), oldest, strict=False)]
        for v in (*stale, *evicted):
            del self._known[v]
        if stale or evicted:
            self._dirty = True
        return len(evicted)


def _report_evicted(count: int, max_values: int) -> None:
    # Logged outside the lock: the log pipeline scrubs, which takes the lock.
    if count:
        log.warning("secret_masks_evicted", count=count, max_values=max_values)


def _build(known: Iterable[_Known]) -> Any:
    forms = {f for k in known for f in k.forms}
    if not forms:
        return None
    automaton = ahocorasick.Automaton()
    for form in forms:
        automaton.add_word(form, len(form))
    automaton.make_automaton()
    return automaton


def _scrub_with(automaton: Any, text: str) -> str:
    if automaton is None:
        return text
    matches = automaton.iter(text)
    first = next(matches, None)
    if first is None:  # the common case: nothing to mask
        return text
    out: list[str] = []
    pos = 0
    for start, end in _merged([first, *matches]):
        out += (text[pos:start], MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _merged(matches: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching matches (``(end index, length)``) as disjoint spans."""
    spans = sorted((end - length + 1, end + 1) for end, length in matches)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


# -- rendering any value as scrubbed, JSON-ready data ----------------------------------------

_MAX_DEPTH = 8
_MAX_ITEMS = 1000


def scrub_value(value: Any, max_chars: int = 65536) -> Any:
    """Render ``value`` as JSON-ready data whose every piece of text has been scrubbed.

    Strings, exceptions, bytes, URLs, dataclasses and any other object become text *first* and
    are then scrubbed; mappings and sequences keep their shape. Text is cut to ``max_chars``
    only after scrubbing, so a cut can never leave part of a secret unmasked.
    """
    return _Renderer(REDACTOR, max_chars).render(value, 0)


class _Renderer:
    def __init__(self, redactor: Redactor, max_chars: int) -> None:
        self.automaton = redactor.current()  # one set of masks for the whole value
        self.max_chars = max_chars

    def render(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return self._number(value)
        if isinstance(value, Mapping) and depth < _MAX_DEPTH:
            return self._mapping(value, depth)
        if isinstance(value, list | tuple | set | frozenset) and depth < _MAX_DEPTH:
            items = [self.render(v, depth + 1) for v in itertools.islice(value, _MAX_ITEMS)]
            if len(value) > _MAX_ITEMS:
                items.append(f"…[{len(value) - _MAX_ITEMS} more items]")
            return items
        return self.text(_as_text(value))

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out = {self.text(_as_text(k)): self.render(v, depth + 1)
               for k, v in itertools.islice(value.items(), _MAX_ITEMS)}
        if len(value) > _MAX_ITEMS:
            out["…"] = f"[{len(value) - _MAX_ITEMS} more items]"
        return out

    def text(self, text: str) -> str:
        clean = _scrub_with(self.automaton, text)
        if len(clean) > self.max_chars:
            return f"{clean[:self.max_chars]}…[{len(clean) - self.max_chars} more chars]"
        return clean

    def _number(self, value: int | float) -> Any:
        text = repr(value)
        clean = _scrub_with(self.automaton, text)
        if clean != text:
            return clean  # a secret that happens to be a number
        # NaN and infinities are not JSON: keep log lines valid for strict parsers.
        return value if isinstance(value, int) or math.isfinite(value) else text


def _as_text(value: Any) -> str:
    """Text for any object; never raises (a broken ``__str__`` must not lose the log line)."""
    try:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return repr(bytes(value))
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return repr(value)
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


REDACTOR = Redactor()
register = REDACTOR.register
release = REDACTOR.release
scrub = REDACTOR.scrub
scrub_obj = REDACTOR.scrub_obj
configure = REDACTOR.configure


def pin(value: str) -> None:
    """Mask ``value`` until :func:`release` (for credentials held for a process's lifetime)."""
    REDACTOR.register(value, pin=True)
