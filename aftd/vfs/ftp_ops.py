"""Blocking FTP operations, each one call on a pool thread (one round trip where possible).

Paths here are absolute server paths, already confined by :mod:`aftd.vfs.ftp`. Commands that do
not depend on each other's answers are pipelined (sent together, replies read in order), so
``stat`` or ``rename`` costs one round trip rather than two or three.
"""

from __future__ import annotations

import ftplib
import hashlib
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import structlog

from aftd.vfs.ftp_client import DataConn, FtpClient, format_mdtm, parse_mdtm
from aftd.vfs.ftp_list import Entry, UnparsedLine, parse_list, parse_mlsx_line

__all__ = [
    "NotFound",
    "Refused",
    "RootMissing",
    "TargetExists",
    "copy_prefix",
    "cut_on_failure",
    "exists",
    "list_dir",
    "makedirs",
    "mtime_command",
    "mtime_was_set",
    "read_all",
    "read_back_sha256",
    "recv_fill",
    "remove",
    "rename",
    "retr_to_sink",
    "server_hash",
    "set_mtime",
    "size_of",
    "stat",
    "stor_from_source",
]

log = structlog.get_logger("aftd.vfs.ftp")
_MDTM_BATCH = 512  # files per pipelined MDTM round (replies must fit the socket buffers)


class NotFound(Exception):
    """The path does not exist on the server."""


class RootMissing(NotFound):
    """The VFS root itself does not exist (the message is the root): nothing is created
    above the root, as an object store does not create an unknown bucket."""


class Refused(Exception):
    """The server refused the operation; the message is its reply."""


class TargetExists(Exception):
    """A rename without ``overwrite`` found its target (not an OSError: those mean a broken
    connection here)."""


def _reply(value: str | ftplib.Error) -> str | None:
    return value if isinstance(value, str) else None


def _size(reply: str | None) -> int | None:
    if reply is None or not reply.startswith("213"):
        return None
    text = reply[4:].strip()
    return int(text) if text.isdigit() else None


def stat(c: FtpClient, path: str, name: str) -> Entry:
    """What ``path`` is (links followed, as the server does); raises :class:`NotFound`."""
    if c.features.mlst:
        try:
            resp = c.sendcmd(f"MLST {path}")
        except ftplib.error_perm:
            raise NotFound(path) from None
        facts = [ln[1:] for ln in resp.splitlines()[1:] if ln.startswith(" ")]
        entry = parse_mlsx_line(facts[0]) if facts else None
        if entry is None:  # "cdir": the server describes the directory itself
            return Entry(name=name, kind="dir", precise=True)
        return replace(entry, name=name)
    # One round trip: SIZE and MDTM answer for a file, CWD for a directory (the working
    # directory matters to nothing else: listings change into their directory first).
    size_r, mdtm_r, cwd_r = c.pipeline([f"SIZE {path}", f"MDTM {path}", f"CWD {path}"])
    size = _size(_reply(size_r))
    if size is not None:
        mdtm = _reply(mdtm_r)
        mtime = parse_mdtm(mdtm[4:]) if mdtm and mdtm.startswith("213") else None
        return Entry(name=name, kind="file", size=size, mtime=mtime, precise=mtime is not None)
    if isinstance(cwd_r, str):
        return Entry(name=name, kind="dir")
    raise NotFound(path)


def _is_dir(c: FtpClient, path: str) -> bool:
    try:
        c.sendcmd(f"CWD {path}")
    except ftplib.error_perm:
        return False
    return True


def exists(c: FtpClient, path: str) -> bool:
    try:
        stat(c, path, "")
    except NotFound:
        return False
    return True


def size_of(c: FtpClient, path: str) -> int | None:
    """The stored size of a file, None when there is no such file."""
    try:
        return _size(c.sendcmd(f"SIZE {path}"))
    except ftplib.error_perm:
        return None


def read_all(c: FtpClient, command: str) -> bytes:
    """A whole data transfer (a listing) into memory."""
    conn, _ = c.ntransfercmd(command)
    chunks = []
    with cut_on_failure(c, conn):
        while data := conn.recv(1 << 16):
            chunks.append(data)
    c.end_transfer(conn, sent=False)
    return b"".join(chunks)


def list_dir(c: FtpClient, path: str) -> list[Entry]:
    """The entries of a directory; raises :class:`NotFound` (or Refused: not a directory)."""
    if not _is_dir(c, path):
        if exists(c, path):
            raise Refused("not a directory")
        raise NotFound(path)
    if c.features.mlst:
        return _mlsd(c, path)
    entries = _list(c)
    return _exact_times(c, path, entries)


def _list(c: FtpClient) -> list[Entry]:
    """``LIST -a`` of the current directory: vsftpd hides dot files without ``-a``. The path
    is never an argument (an argument starting with ``-`` or holding ``*`` would be read as
    options or a pattern)."""
    try:
        raw = read_all(c, "LIST -a")
    except ftplib.error_perm:
        raw = read_all(c, "LIST")
    entries, bad = parse_list(raw.decode("utf-8", "surrogateescape"))
    for line in bad:  # e.g. a name with a line break in it, split over two lines
        log.warning("ftp_list_line_unparsed", line=line)
    return entries


def _mlsd(c: FtpClient, path: str) -> list[Entry]:
    raw = read_all(c, f"MLSD {path}").decode("utf-8", "surrogateescape")
    entries: list[Entry] = []
    for line in raw.splitlines():
        try:
            entry = parse_mlsx_line(line.rstrip("\r")) if line.strip() else None
        except UnparsedLine:  # e.g. a name with a line break in it, split over two lines
            log.warning("ftp_list_line_unparsed", line=line)
            continue
        if entry is not None:
            entries.append(entry)
    # Servers that follow symlinks in MLSD (pyftpdlib) show a link as its target, or not at
    # all when it dangles; LIST shows links and special files, so a tree copy can skip them
    # as it does on every backend.
    try:
        marks = {e.name: e for e in _list(c) if e.kind in ("link", "special")}
    except (UnparsedLine, ftplib.error_perm):
        marks = {}
    out = [replace(marks.pop(e.name), size=e.size, mtime=e.mtime, precise=e.precise)
           if e.name in marks else e for e in entries]
    return out + list(marks.values())


def _exact_times(c: FtpClient, path: str, entries: list[Entry]) -> list[Entry]:
    """LIST times are minutes at best: ask MDTM for each file, pipelined."""
    files = [i for i, e in enumerate(entries) if e.kind == "file"]
    if not files or not c.features.mdtm:
        return entries
    out = list(entries)
    for start in range(0, len(files), _MDTM_BATCH):
        batch = files[start:start + _MDTM_BATCH]
        replies = c.pipeline(f"MDTM {posixpath.join(path, entries[i].name)}" for i in batch)
        for i, r in zip(batch, replies, strict=True):
            text = _reply(r)
            mtime = parse_mdtm(text[4:]) if text and text.startswith("213") else None
            if mtime is not None:
                out[i] = replace(out[i], mtime=mtime, precise=True)
    return out


def makedirs(c: FtpClient, root: str, parts: list[str]) -> None:
    """MKD each missing level below ``root`` (pipelined; "exists" replies are fine)."""
    paths = [posixpath.join(root, *parts[:i]) for i in range(1, len(parts) + 1)]
    if not paths or _is_dir(c, paths[-1]):
        return
    c.pipeline(f"MKD {p}" for p in paths)
    if not _is_dir(c, paths[-1]):
        if not _is_dir(c, root):
            raise RootMissing(root)
        raise Refused(f"cannot create the directory {paths[-1]}")


def remove(c: FtpClient, path: str) -> None:
    """DELE, else RMD (a directory) -- sent together; a link is removed as a link."""
    dele, rmd = c.pipeline([f"DELE {path}", f"RMD {path}"])
    if isinstance(dele, str) or isinstance(rmd, str):
        return
    if not exists(c, path):
        raise NotFound(path)
    raise Refused(str(rmd if _is_dir(c, path) else dele))


def rename(c: FtpClient, src: str, dst: str, overwrite: bool) -> None:
    """RNFR/RNTO. FTP has no "fail if the target exists" rename, so without ``overwrite`` the
    target is checked first (a race with another writer remains)."""
    if not overwrite and exists(c, dst):
        raise TargetExists(dst)
    rnfr, rnto = c.pipeline([f"RNFR {src}", f"RNTO {dst}"])
    if isinstance(rnfr, ftplib.Error):
        if not exists(c, src):
            raise NotFound(src)
        raise Refused(str(rnfr))
    if isinstance(rnto, ftplib.Error):
        if overwrite and exists(c, dst):  # a server that will not replace: delete, then rename
            c.sendcmd(f"DELE {dst}")
            c.sendcmd(f"RNFR {src}")
            c.sendcmd(f"RNTO {dst}")
            return
        raise Refused(str(rnto))


def mtime_command(c: FtpClient, path: str, mtime: float) -> str | None:
    """MFMT where FEAT offers it, else vsftpd's ``MDTM YYYYMMDDHHMMSS path``; None: neither."""
    if c.features.mfmt:
        return f"MFMT {format_mdtm(mtime)} {path}"
    if c.features.mdtm:
        return f"MDTM {format_mdtm(mtime)} {path}"
    return None


def mtime_was_set(reply: str | ftplib.Error) -> bool:
    """A 2xx to the set form; a server that read it as a query of a file named
    ``"YYYYMMDDHHMMSS path"`` answers 550 (or, absurdly, a bare time)."""
    if not isinstance(reply, str) or not reply.startswith("2"):
        return False
    return parse_mdtm(reply[4:]) is None or reply.startswith("213 Modify=")


def set_mtime(c: FtpClient, path: str, mtime: float) -> bool:
    cmd = mtime_command(c, path, mtime)
    if cmd is None:
        return False
    (reply,) = c.pipeline([cmd])
    if not mtime_was_set(reply) and not exists(c, path):
        raise NotFound(path)
    return mtime_was_set(reply)


def server_hash(c: FtpClient, path: str) -> str:
    """SHA-256 of a stored file computed by the server (HASH or XSHA256)."""
    command = c.features.sha256_command
    reply = c.sendcmd(f"{command} {path}")
    # HASH: "213 SHA-256 0-1234 <hex> path"; XSHA256: "213 <hex>" (some add the path)
    for word in reply[4:].split():
        if len(word) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in word):
            return word.lower()
    raise Refused(f"unreadable {command} reply: {reply}")


def recv_fill(conn: DataConn, view: memoryview) -> int:
    """Fill ``view`` from the data connection; fewer bytes only at the end of the stream."""
    pos = 0
    while pos < len(view):
        n = conn.recv_into(view[pos:])
        if n == 0:
            break
        pos += n
    return pos


def read_back_sha256(c: FtpClient, path: str, block: int) -> str:
    """SHA-256 of the stored bytes, read back over a data connection (hashlib releases the GIL
    on large buffers, so other threads run meanwhile)."""
    h = hashlib.sha256()
    retr_to_sink(c, path, 0, block, lambda _pos, chunk: h.update(chunk))
    return h.hexdigest()


def retr_to_sink(c: FtpClient, path: str, offset: int, block: int,
                 sink: Callable[[int, memoryview], None]) -> int:
    """``RETR`` from ``offset``, each full ``block`` handed to ``sink(position, chunk)`` on
    this thread from one reused buffer; returns the position after the last byte."""
    conn, _ = c.ntransfercmd(f"RETR {path}", rest=offset or None)
    view = memoryview(bytearray(block))
    pos = offset
    with cut_on_failure(c, conn):
        while True:
            n = recv_fill(conn, view)
            if n:
                sink(pos, view[:n])
                pos += n
            if n < block:
                break
    c.end_transfer(conn, sent=False)
    return pos


def retr_range_to_sink(c: FtpClient, path: str, start: int, end: int, block: int,
                       sink: Callable[[int, memoryview], None]) -> int:
    """Bytes ``[start, end)`` into ``sink`` as :func:`retr_to_sink` moves them; FTP has no
    ranged read with an end, so the transfer is cut there (the caller then discards the
    control connection, whose state after a cut is the server's to choose). Returns the
    position after the last byte (before ``end`` only if the file ended first)."""
    conn, _ = c.ntransfercmd(f"RETR {path}", rest=start or None)
    view = memoryview(bytearray(block))
    pos = start
    try:
        while pos < end:
            want = min(block, end - pos)
            n = recv_fill(conn, view[:want])
            if n:
                sink(pos, view[:n])
                pos += n
            if n < want:
                break
    except BaseException:
        conn.close()
        c.data = None
        raise
    if pos < end:
        c.end_transfer(conn, sent=False)
    else:
        conn.close()
        c.data = None
    return pos


def stor_from_source(c: FtpClient, opener: Callable[[FtpClient], DataConn], offset: int,
                     block: int, source: Callable[[int, memoryview], int],
                     tail: Callable[[FtpClient, float | None, int], int],
                     mtime: float | None) -> int:
    """Open an upload with ``opener``, send what ``source(position, buffer)`` fills into one
    reused buffer until it returns 0, end the transfer cleanly, then ``tail`` (stored size and
    mtime, in one round trip)."""
    conn = opener(c)
    view = memoryview(bytearray(block))
    pos = offset
    with cut_on_failure(c, conn):
        while n := source(pos, view):
            conn.sendall(view[:n])
            pos += n
        c.end_transfer(conn, sent=True)
    return tail(c, mtime, pos)


@contextmanager
def cut_on_failure(c: FtpClient, conn: DataConn) -> Iterator[None]:
    """A transfer that fails midway is cut: its data connection closed and forgotten."""
    try:
        yield
    except BaseException:
        conn.close()
        c.data = None
        raise


def copy_prefix(rc: FtpClient, src_path: str, out: DataConn, count: int,
                block: int) -> None:
    """Send the first ``count`` bytes of ``src_path`` (read on another connection, ``rc``)
    into the data connection ``out``; ``rc`` is left mid-transfer (discard it)."""
    src, _ = rc.ntransfercmd(f"RETR {src_path}")
    view = memoryview(bytearray(block))
    left = count
    try:
        while left:
            n = src.recv_into(view[:min(left, block)])
            if n == 0:
                raise Refused(f"{src_path} ended before {count} bytes")
            out.sendall(view[:n])
            left -= n
    finally:
        src.close()
        rc.data = None
