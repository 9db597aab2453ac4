"""What differs between local filesystems on Linux, macOS and Windows: one small function each.

Nothing here is imported only on one OS: every facility is looked up where it is used, so the
package imports everywhere, and each function says what it does where the facility is missing.

=====================  ===============================  ======================================
facility               Linux / macOS                    Windows (or where it is missing)
=====================  ===============================  ======================================
exclusive file lock    ``fcntl.flock``                  ``msvcrt.locking`` on one byte; with
                                                        neither, the lease of ``lease.py``
open without links     ``O_NOFOLLOW``                   ``lstat`` before, ``fstat`` after
flush a folder         ``fsync`` of the folder          nothing (NTFS journals its folders)
flush a whole tree     ``syncfs`` (Linux), ``sync``     ``fsync`` of every file and folder
is a process alive     ``kill(pid, 0)``                 ``OpenProcess`` + ``WaitForSingleObject``
=====================  ===============================  ======================================
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

try:  # POSIX
    import fcntl as _fcntl
except ImportError:
    _fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt as _msvcrt
except ImportError:
    _msvcrt = None  # type: ignore[assignment]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
BINARY = getattr(os, "O_BINARY", 0)
# msvcrt locks byte ranges and refuses reads inside them: the lock sits far past the holder's
# description at the start of the file, which other builds read to say who holds the image.
_MSVCRT_LOCK_OFFSET = 2**20


def has_os_lock() -> bool:
    """Whether the OS offers a lock that it drops when its holder dies."""
    return _fcntl is not None or _msvcrt is not None


def try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting: False when another process holds it."""
    if _fcntl is not None:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if _msvcrt is not None:
        os.lseek(fd, _MSVCRT_LOCK_OFFSET, os.SEEK_SET)
        try:
            _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        return True
    raise RuntimeError("no OS file lock here; use napari_pyramids.storage.lease")


def unlock_and_remove(fd: int, path: Path) -> None:
    """Give back a lock taken by :func:`try_lock` and remove its file.

    POSIX removes the name first, so that a process that opened it meanwhile sees, after its
    own flock, that the file is no longer the lock (see ``ImageLock``). Windows cannot remove
    an open file: it closes first, and a file another build opened since stays (harmless).
    """
    if _fcntl is not None:
        try:
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)
        return
    try:
        if _msvcrt is not None:
            os.lseek(fd, _MSVCRT_LOCK_OFFSET, os.SEEK_SET)
            with contextlib.suppress(OSError):
                _msvcrt.locking(fd, _msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def open_no_link(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (OSError with ``ELOOP``).

    Without ``O_NOFOLLOW`` the name is checked with ``lstat`` before the open and the opened
    file compared with it after, so a link swapped in between is refused too.
    """
    flags |= CLOEXEC | BINARY
    if NOFOLLOW:
        return os.open(path, flags | NOFOLLOW, mode)
    before = _lstat_or_none(path)
    if before is not None and stat.S_ISLNK(before.st_mode):
        raise OSError(errno.ELOOP, "is a symbolic link", str(path))
    fd = os.open(path, flags, mode)
    after = _lstat_or_none(path)
    if after is None or stat.S_ISLNK(after.st_mode) or not same_file(os.fstat(fd), after):
        os.close(fd)
        raise OSError(errno.ELOOP, "is a symbolic link", str(path))
    return fd


def _lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def write_at(fd: int, data: bytes, offset: int = 0) -> None:
    """Write ``data`` at ``offset`` (``pwrite`` is POSIX-only)."""
    os.lseek(fd, offset, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_at(fd: int, size: int, offset: int = 0) -> bytes:
    """Read up to ``size`` bytes at ``offset`` (``pread`` is POSIX-only)."""
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (creations, renames) durable.

    Windows cannot open a folder as a file; NTFS journals folder changes itself.
    """
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_tree(path: Path) -> None:
    """Make everything written below folder ``path`` durable, in as few calls as the OS allows.

    Linux flushes the folder's whole filesystem with one ``syncfs``; other POSIX systems with
    ``sync``; elsewhere (Windows) every file and folder below ``path`` is flushed one by one.
    Threads flushing the same filesystem at once share the whole-filesystem calls (see
    :class:`_SharedFlush`): the images of a dataset build publish many at a time.
    """
    syncfs = _syncfs()
    if syncfs is not None:
        shared = _shared_flush(os.stat(path).st_dev)
        if shared.flush(lambda: _syncfs_folder(syncfs, path)):
            return
    sync = getattr(os, "sync", None)
    if sync is not None:
        _shared_flush(None).flush(lambda: _call(sync))
        return
    for folder, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDWR | BINARY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _syncfs_folder(syncfs: ctypes._CFuncPtr, path: Path) -> bool:
    """``syncfs`` of the filesystem holding ``path``: False if the call failed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def _call(function: Callable[[], object]) -> bool:
    function()
    return True


class _SharedFlush:
    """Whole-filesystem flushes shared by the threads that ask for one at the same time.

    A flush covers what was written before it started. A thread that asks while one is under
    way (it may have started before this thread's writes) waits for it to end, then either
    finds its writes covered by a flush that started after it asked, or starts the next one,
    covering every thread that has asked so far. Eight images publishing together then cost
    two or three flushes instead of eight, each of which would wait for the others' data.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._asked = 0  # flushes asked for, numbered 1, 2, ...
        self._covered = 0  # every ask up to this number is durable
        self._running = False

    def flush(self, run: Callable[[], bool]) -> bool:
        """Return once a flush that started after this call has succeeded (True), or when
        this thread's own flush failed (False: the caller falls back to another way)."""
        with self._changed:
            self._asked += 1
            ticket = self._asked
            while self._covered < ticket:
                if not self._running:
                    self._running, covers = True, self._asked
                    break
                self._changed.wait()
            else:
                return True
        ok = False
        try:
            ok = run()
        finally:
            with self._changed:
                self._running = False
                if ok:
                    self._covered = max(self._covered, covers)
                self._changed.notify_all()
        return ok


_SHARED: dict[int | None, _SharedFlush] = {}
_SHARED_LOCK = threading.Lock()


def _shared_flush(device: int | None) -> _SharedFlush:
    """The shared flushes of filesystem ``device`` (None: every filesystem, as ``sync``)."""
    with _SHARED_LOCK:
        shared = _SHARED.get(device)
        if shared is None:
            shared = _SHARED[device] = _SharedFlush()
        return shared


@functools.cache
def _syncfs() -> ctypes._CFuncPtr | None:
    """libc's ``syncfs`` (looked up once: loading libc costs more than a small flush)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    except OSError:  # pragma: no cover - a libc that cannot be loaded
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie counts as alive)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _windows_process_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    synchronize, query_limited, wait_timeout = 0x00100000, 0x1000, 0x102
    handle = kernel32.OpenProcess(synchronize | query_limited, False, pid)
    if not handle:
        # Access denied means it exists; anything else (invalid parameter) that it does not.
        return ctypes.get_last_error() == 5
    try:
        return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
    finally:
        kernel32.CloseHandle(handle)
