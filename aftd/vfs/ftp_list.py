"""Reading FTP directory listings: ``MLSD``/``MLST`` facts (RFC 3659) and ``LIST`` lines.

``LIST`` has no standard format; this reads the Unix ``ls -l`` form that vsftpd, ProFTPD,
Pure-FTPd and pyftpdlib print (with or without a group column, devices with ``major, minor``,
symlinks as ``name -> target``) and the MS-DOS form of IIS. Its times are minutes at best, so
the backend asks ``MDTM`` for the exact time of each file. Names are taken verbatim after the
time field (one separating space), so names with spaces survive.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from aftd.vfs.ftp_client import parse_mdtm

__all__ = ["Entry", "UnparsedLine", "parse_list", "parse_list_line", "parse_mlsx_line"]

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_UNIX = re.compile(
    r"^(?P<kind>[-dlbcpsD])(?P<perm>[-rwxsStTlL]{9})[.+@]?\s+\d+\s+\S+(?:\s+\S+)?\s+"
    r"(?P<size>\d+|\d+,\s*\d+)\s+(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<when>\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$")
_DOS = re.compile(
    r"^(?P<m>\d{2})-(?P<d>\d{2})-(?P<y>\d{2,4})\s+(?P<h>\d{1,2}):(?P<mi>\d{2})(?P<ap>[AaPp][Mm])?"
    r"\s+(?P<size><DIR>|\d+)\s+(?P<name>.+)$")
_KINDS = {"-": "file", "d": "dir", "l": "link", "D": "dir"}
_SIX_MONTHS = 183 * 86400


class UnparsedLine(ValueError):
    """A LIST line in no format this module knows."""


@dataclass(frozen=True)
class Entry:
    """One listed name: ``kind`` is file, dir, link or special; ``mtime`` None when unknown;
    ``precise`` when the time is to the second (MLSD, MDTM); ``target`` a symlink's text."""

    name: str
    kind: str
    size: int = 0
    mtime: float | None = None
    mode: int = 0
    precise: bool = False
    target: str = ""


def parse_mlsx_line(line: str) -> Entry | None:
    """``type=file;size=5;modify=20200102030405; name``; None for ``.``/``..`` entries."""
    facts_text, sep, name = line.partition(" ")
    if not sep:
        raise UnparsedLine(line)
    facts: dict[str, str] = {}
    for fact in facts_text.split(";"):
        key, eq, value = fact.partition("=")
        if eq:
            facts[key.strip().lower()] = value
    kind, target = _mlsx_kind(facts.get("type", "file"))
    if kind == "":
        return None
    size = int(facts["size"]) if facts.get("size", "").isdigit() else 0
    mtime = parse_mdtm(facts["modify"]) if "modify" in facts else None
    return Entry(name=name, kind=kind, size=size, mtime=mtime, mode=_octal(facts),
                 precise=mtime is not None, target=target)


def _mlsx_kind(value: str) -> tuple[str, str]:
    low = value.lower()
    if low in ("cdir", "pdir"):
        return "", ""
    if low == "dir":
        return "dir", ""
    if low == "file":
        return "file", ""
    if low.startswith("os.unix=slink") or low.startswith("os.unix=symlink"):
        return "link", value.partition(":")[2]
    if low.startswith("os.unix="):
        return "special", ""
    return "file", ""  # unknown types are treated as files, as rclone does


def _octal(facts: dict[str, str]) -> int:
    text = facts.get("unix.mode", "").lower().removeprefix("0o")
    try:
        return int(text, 8) & 0o7777 if text else 0
    except ValueError:
        return 0


def parse_list_line(line: str, now: float | None = None) -> Entry | None:
    """One ``LIST`` line; None for lines that carry no entry (``total N``, ``.``, ``..``)."""
    if not line.strip() or line.lower().startswith("total "):
        return None
    m = _UNIX.match(line)
    if m is not None:
        return _unix_entry(m, time.time() if now is None else now)
    m = _DOS.match(line)
    if m is not None:
        return _dos_entry(m)
    raise UnparsedLine(line)


def _unix_entry(m: re.Match[str], now: float) -> Entry | None:
    name, kind, target = m["name"], _KINDS.get(m["kind"], "special"), ""
    if kind == "link":
        name, _, target = name.partition(" -> ")
    if name in (".", ".."):
        return None
    size = int(m["size"]) if kind != "special" and m["size"].isdigit() else 0
    return Entry(name=name, kind=kind, size=size, mtime=_unix_time(m, now),
                 mode=_mode(m["perm"]), target=target)


def _unix_time(m: re.Match[str], now: float) -> float | None:
    month = _MONTHS.get(m["mon"].lower())
    if month is None:
        return None
    day, when = int(m["day"]), m["when"]
    try:
        if ":" in when:  # within the last six months: the year is implied
            hour, minute = (int(x) for x in when.split(":"))
            year = time.gmtime(now).tm_year
            t = calendar.timegm((year, month, day, hour, minute, 0))
            if t > now + 86400:
                t = calendar.timegm((year - 1, month, day, hour, minute, 0))
            return float(t)
        return float(calendar.timegm((int(when), month, day, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _mode(perm: str) -> int:
    bits = 0
    for i, ch in enumerate(perm):
        if ch not in "-ST":
            bits |= 1 << (8 - i)
    return bits


def _dos_entry(m: re.Match[str]) -> Entry | None:
    year = int(m["y"])
    year += 2000 if year < 70 else 1900 if year < 100 else 0
    hour = int(m["h"]) % 12 if m["ap"] else int(m["h"])
    if m["ap"] and m["ap"].lower() == "pm":
        hour += 12
    try:
        mtime: float | None = float(calendar.timegm(
            (year, int(m["m"]), int(m["d"]), hour, int(m["mi"]), 0)))
    except (ValueError, OverflowError):
        mtime = None
    is_dir = m["size"] == "<DIR>"
    if m["name"] in (".", ".."):
        return None
    return Entry(name=m["name"], kind="dir" if is_dir else "file",
                 size=0 if is_dir else int(m["size"]), mtime=mtime)


def parse_list(text: str, now: float | None = None) -> tuple[list[Entry], list[str]]:
    """The entries of a ``LIST`` reply, and the lines in no known format. Raises
    :class:`UnparsedLine` when no line could be read at all (a format this module does not
    know: better an error than a directory that looks empty)."""
    out: list[Entry] = []
    bad: list[str] = []
    for line in text.splitlines():
        try:
            entry = parse_list_line(line.rstrip("\r"), now)
        except UnparsedLine:
            bad.append(line)
            continue
        if entry is not None:
            out.append(entry)
    if bad and not out:
        raise UnparsedLine(bad[0])
    return out, bad
