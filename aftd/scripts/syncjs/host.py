"""The host side of the SyncJS API: the one callable the prelude calls, ``host(op, argsJson)``.

It runs on the JavaScript thread and answers JSON, ``{"v": value}`` (``{}`` for undefined) or
``{"e": message}`` (the prelude throws the latter as an ``Error``). It never raises: a Python
exception inside a QuickJS callable leaves the interpreter in an error state. Calls that need
the event loop go through the :class:`~aftd.scripts.syncjs.bridge.LoopBridge`; the rest
(params, logging, sleeping) are answered here.

``Exit`` and an unsupported SyncJS function end the script: they tell the engine how the job
ended and never return, so no ``catch`` or ``finally`` of the script runs after them (the
worker process ends with the job).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from aftd.scripts.context import JobContext
from aftd.scripts.syncjs.bridge import LoopBridge
from aftd.scripts.syncjs.errors import first_frame
from aftd.scripts.syncjs.hostargs import HostCallError, number, text
from aftd.scripts.syncjs.http_ops import HttpOps
from aftd.scripts.syncjs.report_ops import ReportOps
from aftd.scripts.syncjs.vfs_ops import VfsOps

__all__ = ["UNSUPPORTED", "Ending", "Host"]

# SyncJS functions of AFT! and Syncplify Server! that aftd does not provide. Calling one fails
# the job naming it and the line (an unknown name is a ReferenceError, which names it too).
UNSUPPORTED = (
    "ConsoleFeedback", "WaitForHaltSignal", "SendMail", "SendMailViaSMTP", "SendToSlack",
    "SendToTeams", "RunCommand", "ExecCommand", "ExecCommandAsync", "ReadTextFile",
    "WriteTextFile", "AppendTextToFile", "CopyFile", "MoveFile", "DelFile", "DelTree",
    "MakeDir", "FileExists", "DirExists", "FileSize", "ExtractArchive", "ZipFiles",
    "PGPEncryptFile", "PGPDecryptFile", "FileHash", "NewUUID", "GetEnv", "SftpClient",
    "FtpClient", "FtpsClient", "S3Client", "AzureClient", "GCSClient", "SmbClient",
    "FsWatcher", "RemoteWatcher", "VirtualFS", "GetCurrentVFS", "Mailer", "Zip", "Unzip",
)
_LEVELS = frozenset({"debug", "info", "warning", "error"})
_PIECE = 1000  # a log line's event text is cut here by the daemon: longer messages are split
_MAX_PIECES = 64
_MAX_SLEEP_MS = 2**31 - 1
_INT32 = 2**31


@dataclass(frozen=True)
class Ending:
    """How the script ended: ran to its end, ``Exit(code)``, an uncaught error (the engine's
    ``text``), an unsupported function (``text`` is the job's error), or the engine failed."""

    kind: Literal["finished", "exit", "error", "unsupported", "crash"]
    code: int | None = None
    text: str = ""


Op = Callable[[Mapping[str, Any]], Any]
AsyncOp = Callable[[Mapping[str, Any]], Coroutine[Any, Any, Any]]


class Host:
    def __init__(self, ctx: JobContext, jlog: Any, bridge: LoopBridge,
                 end: Callable[[Ending], None], script: str) -> None:
        self._ctx, self._jlog, self._bridge, self._end = ctx, jlog, bridge, end
        self._script = script
        self._sync: dict[str, Op] = {
            "params": self._params, "log": self._log, "sleep": self._sleep,
            "exit": self._exit, "unsupported": self._unsupported,
            "unsupported.names": lambda _: list(UNSUPPORTED),
        }
        http, vfs, reports = HttpOps(ctx), VfsOps(ctx), ReportOps(ctx)
        self._async: dict[str, AsyncOp] = {
            "secret": self._secret, "http": http.request,
            "vfs.open": vfs.open, "vfs.copy": vfs.copy, "vfs.list": vfs.listdir,
            "vfs.stat": vfs.stat, "vfs.mkdir": vfs.mkdir, "vfs.delete": vfs.delete,
            "vfs.rename": vfs.rename, "report.intent": reports.intent,
            "report.submit": reports.submit, "report.void": reports.void,
            "report.now": reports.now,
        }

    def __call__(self, op: object, raw: object) -> str:
        """The QuickJS callable: never raises (see the module docstring)."""
        try:
            args = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(args, dict):
                raise HostCallError("host call without an arguments object")
            value = self._answer(str(op), args)
            # None is JavaScript's undefined: {} (a missing Params value, a void call).
            return json.dumps({} if value is None else {"v": value}, allow_nan=False)
        except BaseException as exc:  # everything goes back to the script
            return json.dumps({"e": _message(exc)})

    def _answer(self, op: str, args: Mapping[str, Any]) -> Any:
        if op in self._sync:
            return self._sync[op](args)
        if op in self._async:
            handler = self._async[op]
            return self._bridge.run(lambda: handler(args))
        raise HostCallError(f"unknown host call {op!r}")

    # -- answered on the JavaScript thread ---------------------------------------------------
    def _params(self, args: Mapping[str, Any]) -> Any:
        value = self._ctx.params.get(text(args, "name", "Params: name"))
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value) if isinstance(value, int | float) else json.dumps(value)

    async def _secret(self, args: Mapping[str, Any]) -> str:
        return await self._ctx.secret(text(args, "name", "GetSecret: name"))

    def _log(self, args: Mapping[str, Any]) -> None:
        level = args.get("level")
        method = getattr(self._jlog, level if level in _LEVELS else "info")
        message = text(args, "msg", "Log: message")
        source = str(args.get("source", "Log"))
        pieces = [message[i:i + _PIECE] for i in range(0, len(message), _PIECE)] or [""]
        for piece in pieces[:_MAX_PIECES]:
            method(piece, source=source)
        if len(pieces) > _MAX_PIECES:
            method(f"(message cut: {len(message)} characters)", source=source)

    def _sleep(self, args: Mapping[str, Any]) -> None:
        time.sleep(number(args, "ms", "Sleep: ms", high=_MAX_SLEEP_MS) / 1000)

    def _exit(self, args: Mapping[str, Any]) -> NoReturn:
        code = args.get("code")
        if isinstance(code, float) and code.is_integer():
            code = int(code)
        if not isinstance(code, int) or isinstance(code, bool) or not -_INT32 <= code < _INT32:
            raise HostCallError(f"Exit: code must be an integer, got {str(code)[:40]}")
        self._stop(Ending("exit", code=code))

    def _unsupported(self, args: Mapping[str, Any]) -> NoReturn:
        name = str(args.get("name"))[:100]
        frame = first_frame(str(args.get("stack", "")))
        where = f"line {frame[0]}" if frame else "line unknown"
        self._jlog.error("syncjs_unsupported", function=name, line=frame[0] if frame else None)
        self._stop(Ending("unsupported", text=f"SyncJS function {name} is not supported by "
                                              f"aftd ({where} of {self._script})"))

    def _stop(self, ending: Ending) -> NoReturn:
        """Report the end and park this thread for good: the worker exits with the job."""
        self._end(ending)
        threading.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover


def _message(exc: BaseException) -> str:
    text_ = str(exc)
    if isinstance(exc, HostCallError | KeyError) or type(exc).__module__.startswith("aftd"):
        return text_ or type(exc).__name__
    return f"{type(exc).__name__}: {text_}" if text_ else type(exc).__name__
