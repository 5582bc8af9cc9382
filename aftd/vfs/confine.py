"""Race-free resolution of paths beneath a directory (the local backend's confinement).

Checking a resolved path and then using the unresolved one leaves a window in which a directory
can be swapped for a symlink that leads out of the root. Here every path is resolved by the
kernel *relative to a file descriptor of the root* and the caller gets a file descriptor back;
later calls act on that descriptor (or on a name relative to a descriptor of its parent
directory), never on a path string that is resolved again.

Two methods, chosen once per process:

* ``openat2``: Linux 5.6+ ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` resolves the
  whole path in one call and refuses any step that leaves the root (``..`` or a symlink). Python
  has no wrapper, so it is called through ``ctypes``. Kernels without it, or a seccomp filter
  that blocks it (``ENOSYS``/``EPERM``), select the fallback.
* ``openat_walk``: one ``openat(O_PATH | O_NOFOLLOW | O_DIRECTORY)`` per component with the
  parent's descriptor; a symlink is read with ``readlinkat`` and its target resolved the same
  way, ``..`` pops back to the parent's descriptor and may not pop the root.

Both follow symlinks that stay inside the root (a relative link, or an absolute one whose target
lies under the root's path) and refuse everything else. ``AFTD_VFS_RESOLVE=openat_walk`` forces
the fallback (``openat2`` requires it; ``auto`` is the default).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat as statmod
import threading
from collections import deque

__all__ = ["METHODS", "OPENAT2", "WALK", "EscapeError", "Resolver", "available_method"]

OPENAT2 = "openat2"
WALK = "openat_walk"
METHODS = (OPENAT2, WALK)
ENV = "AFTD_VFS_RESOLVE"

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
# openat2 has the same number in the generic syscall table on every architecture listed.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437, "armv7l": 437, "i686": 437,
                "riscv64": 437, "ppc64le": 437, "s390x": 437}
_MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one resolution
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP)


class EscapeError(OSError):
    """The path would leave the root (``..`` above it, or a symlink that points out)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None
_probe_lock = threading.Lock()
_probed: str | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int:
    assert _libc is not None
    if not flags & os.O_CREAT and flags & os.O_TMPFILE != os.O_TMPFILE:
        mode = 0  # openat2, unlike openat, refuses a mode that would not be used (EINVAL)
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2[platform.machine()], dirfd, os.fsencode(path),
                       ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _probe() -> str:
    """``openat2`` when the kernel (and any seccomp filter) lets us call it, else the walk."""
    global _libc
    if platform.machine() not in _SYS_OPENAT2:
        return WALK
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        root = os.open("/", _DIR)
    except (OSError, AttributeError):
        return WALK
    try:
        os.close(_openat2(root, ".", os.O_PATH | os.O_DIRECTORY, 0))
    except OSError as exc:
        if exc.errno in _UNAVAILABLE:
            return WALK
        raise
    finally:
        os.close(root)
    return OPENAT2


def available_method() -> str:
    """The method this process uses unless told otherwise (probed once)."""
    global _probed
    with _probe_lock:
        if _probed is None:
            _probed = _probe()
        return _probed


def _choose(requested: str) -> str:
    if requested in ("", "auto"):  # an explicit method wins over the environment
        requested = os.environ.get(ENV, "") or "auto"
    if requested == "auto":
        return available_method()
    if requested == WALK:
        return WALK
    if requested == OPENAT2:
        if available_method() != OPENAT2:
            raise OSError(errno.ENOSYS, "openat2 is not available on this system")
        return OPENAT2
    raise ValueError(f"unknown resolve method {requested!r}; use auto, {OPENAT2} or {WALK}")


class Resolver:
    """Opens paths (already lexically normalised, "/"-separated, "" = root) beneath ``root``.

    Every method returns a new descriptor the caller must close; errors are ``OSError`` (an
    :class:`EscapeError` for a path that leaves the root). Thread-safe: it holds no descriptor.
    """

    def __init__(self, root: str, method: str = "auto") -> None:
        self.root = root.rstrip("/") or "/"
        self.method = _choose(method)

    def open_root(self) -> int:
        return os.open(self.root, _DIR)

    def open(self, rel: str, flags: int, mode: int = 0o644, *, follow: bool = True) -> int:
        """Open ``rel`` with ``flags``; ``follow=False`` refuses a symlink as the last part."""
        if not follow:
            flags |= os.O_NOFOLLOW
        root = self.open_root()
        try:
            if self.method == OPENAT2:
                return self._beneath(root, rel, flags, mode)
            return self._walk(root, rel, flags, mode)
        finally:
            os.close(root)

    def open_parent(self, rel: str) -> tuple[int, str]:
        """A descriptor of the directory holding ``rel``, and ``rel``'s last component."""
        head, _, name = rel.rpartition("/")
        if not name:
            raise OSError(errno.EBUSY, "the VFS root itself", rel)
        return self.open(head, _DIR), name

    def _beneath(self, root: int, rel: str, flags: int, mode: int) -> int:
        for _ in range(8):
            try:
                return _openat2(root, rel or ".", flags, mode)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    # Leaves the root, or an absolute symlink: the walk decides which.
                    return self._walk(root, rel, flags, mode)
                if exc.errno != errno.EAGAIN:  # EAGAIN: a concurrent rename; try again
                    raise
        return self._walk(root, rel, flags, mode)

    def _walk(self, root: int, rel: str, flags: int, mode: int) -> int:
        return _Walk(self.root, root).open(rel, flags, mode)


class _Walk:
    """One component-by-component resolution; owns the descriptors of the directories on it."""

    def __init__(self, root_path: str, root_fd: int) -> None:
        self.root_path = root_path
        self.root_fd = root_fd
        self.stack: list[int] = []  # descriptors below the root, deepest last
        self.links = 0

    @property
    def here(self) -> int:
        return self.stack[-1] if self.stack else self.root_fd

    def open(self, rel: str, flags: int, mode: int) -> int:
        todo = deque(p for p in rel.split("/") if p)
        nofollow_last = bool(flags & os.O_NOFOLLOW)
        try:
            while todo:
                name = todo.popleft()
                if name == ".":
                    continue
                if name == "..":
                    self._up(rel)
                    continue
                last = not todo
                want = (flags | os.O_NOFOLLOW) if last else (_DIR | os.O_NOFOLLOW)
                fd = self._try(name, want, mode)
                if fd is None:  # a symlink: splice its target into what is left to resolve
                    if last and nofollow_last:
                        raise OSError(errno.ELOOP, "is a symlink", rel)
                    todo.extendleft(reversed(self._target(name, rel)))
                    continue
                if last:
                    return fd
                self.stack.append(fd)
            # The path (or the last link) ended on a directory already open: reopen it as asked.
            return os.open(".", (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC, mode, dir_fd=self.here)
        finally:
            for fd in self.stack:
                os.close(fd)

    def _up(self, rel: str) -> None:
        if not self.stack:
            raise EscapeError(errno.EXDEV, "a symlink leads outside the VFS root", rel)
        os.close(self.stack.pop())

    def _try(self, name: str, flags: int, mode: int) -> int | None:
        """Open one component without following it; None when it is a symlink."""
        try:
            fd = os.open(name, flags | os.O_CLOEXEC, mode, dir_fd=self.here)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not self._is_link(name):
                raise
            return None
        # O_PATH|O_NOFOLLOW without O_DIRECTORY opens a symlink itself instead of failing.
        if flags & os.O_PATH and not flags & os.O_DIRECTORY and \
                statmod.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def _is_link(self, name: str) -> bool:
        try:
            return statmod.S_ISLNK(os.stat(name, dir_fd=self.here, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _target(self, name: str, rel: str) -> list[str]:
        self.links += 1
        if self.links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", rel)
        target = os.readlink(name, dir_fd=self.here)
        if not target.startswith("/"):
            return [p for p in target.split("/") if p]
        base = self.root_path.rstrip("/")
        if target != base and not target.startswith(base + "/"):
            raise EscapeError(errno.EXDEV, "a symlink leads outside the VFS root", rel)
        for fd in self.stack:  # an absolute link inside the root: resolve from the root again
            os.close(fd)
        self.stack.clear()
        return [p for p in target[len(base):].split("/") if p]
