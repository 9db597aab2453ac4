"""One build at a time where no OS lock exists: a lease in one small object, renewed while held.

A lock the OS drops when its holder dies (``flock``, ``msvcrt.locking``) is the best there
is, but some places have none: an object store, or a system without those calls. There a
build holds a *lease*: one object created only if absent, naming its holder and when the
lease expires. A live build renews it in the background; a later build takes it over once it
has expired, or at once when its holder ran on the same machine and is gone (killed, say).

The backend (:class:`LeaseStore`) needs five operations: create-if-absent, read, take over
and renew (each expecting given contents) and delete. :class:`FileLeaseStore` does them with files:
``O_EXCL`` creation, and a takeover that moves the expired lease away before creating its own,
so two builds taking over at once cannot both win. On object stores, the same operations
are conditional writes (``If-None-Match``/``If-Match``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from ..errors import ImageBusyError, PyramidError
from .localfs import BINARY, CLOEXEC, process_alive
from .store import encode_json

# A live build renews its lease every TTL / 4; a lease not renewed for TTL seconds is dead.
LEASE_SECONDS = 30.0
MAX_LEASE_BYTES = 4096


class LeaseStore(Protocol):
    """Where a lease lives: one object, changed only by these four operations."""

    def describe(self) -> str: ...

    def create(self, data: bytes) -> bool:
        """Create the lease with ``data`` if there is none; False if one exists."""

    def read(self) -> bytes | None:
        """The lease's contents, None if there is none."""

    def replace(self, expected: bytes, data: bytes) -> bool:
        """Replace the lease by ``data`` if it still holds ``expected``; False otherwise."""

    def renew(self, expected: bytes, data: bytes) -> bool:
        """Overwrite the lease with ``data`` in place if it still holds ``expected``."""

    def delete(self, expected: bytes) -> None:
        """Remove the lease if it still holds ``expected``."""


class LeaseLock:
    """Hold the lease of ``store`` for one build: ``with LeaseLock(...):``."""

    def __init__(
        self,
        store: LeaseStore,
        build_id: str,
        busy_message: str,
        seconds: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.build_id = build_id
        self.busy_message = busy_message
        self.seconds = seconds
        self._held: bytes | None = None
        self._renewed = 0.0  # time.monotonic() of the last write of our lease
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _record(self) -> bytes:
        now = time.time()
        return encode_json(
            {
                "tool": "napari-pyramids",
                "build": self.build_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "expires": now + self.seconds,
            }
        )

    def acquire(self) -> None:
        record = self._record()
        for _ in range(5):
            if self.store.create(record):
                break
            current = self.store.read()
            if current is None:
                continue  # released between our create and read: try again
            holder = _parse(current)
            if not _expired(holder):
                raise ImageBusyError(self.busy_message.format(holder=_describe(holder)))
            if self.store.replace(current, record):
                break
        else:
            raise ImageBusyError(self.busy_message.format(holder="holder unknown"))
        self._held = record
        self._renewed = time.monotonic()
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew, name=f"lease {self.build_id}", daemon=True
        )
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            with self._guard:
                if self._held is None:
                    return
                record = self._record()
                # A replace that fails means the lease was taken over (this process was
                # stopped past its expiry): holds() then says so before the publish.
                with contextlib.suppress(OSError):
                    if self.store.renew(self._held, record):
                        self._held = record
                        self._renewed = time.monotonic()

    def fresh(self) -> bool:
        """Whether the lease was renewed recently enough that no one can have taken it over.

        Costs no request, so a writer can ask before every write: a process stopped past
        the lease's expiry (suspended, say) finds out when it resumes, before its next write
        lands in what a later build may have published meanwhile.
        """
        return self._held is not None and time.monotonic() - self._renewed < self.seconds * 0.75

    def holds(self) -> bool:
        """Whether the lease is still ours (checked before anything becomes visible)."""
        with self._guard:
            return self._held is not None and self.store.read() == self._held

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._guard:
            held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(OSError):
                self.store.delete(held)


def _parse(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _expired(holder: dict[str, Any]) -> bool:
    """A lease that is unreadable, past its expiry, or whose holder on this machine is gone."""
    expires = holder.get("expires")
    if not isinstance(expires, int | float) or expires < time.time():
        return True
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return pid != os.getpid() and not process_alive(pid)
    return False


def _describe(holder: dict[str, Any]) -> str:
    try:
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except KeyError:
        return "holder unknown"


class FileLeaseStore:
    """A lease kept in one file, for filesystems where the OS offers no lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def create(self, data: bytes) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY
        try:
            # O_EXCL also refuses a symbolic link at the path, whatever it points to.
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            return False
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            # A full disk, say: leave no empty lease that looks like someone else's.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        return True

    def read(self) -> bytes | None:
        return self._read(self.path)

    def _read(self, path: Path) -> bytes | None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            raise PyramidError(f"{path} is a symbolic link; remove it and run again")
        if not stat.S_ISREG(info.st_mode):
            raise PyramidError(f"{path} is not a regular file; remove it and run again")
        try:
            with open(path, "rb") as handle:
                return handle.read(MAX_LEASE_BYTES)
        except FileNotFoundError:
            return None

    def replace(self, expected: bytes, data: bytes) -> bool:
        # Move the lease we judged away under a name only we know, then check we moved that
        # one: two builds taking over at once cannot both move the same file.
        moved = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.old")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return False
        try:
            if self._read(moved) != expected:
                # Someone else's lease (renewed, or a new holder's): put it back if its place
                # is still free, and let the caller report the image as busy.
                if not os.path.lexists(self.path):
                    os.rename(moved, self.path)
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(moved)
        return self.create(data)

    def renew(self, expected: bytes, data: bytes) -> bool:
        if self.read() != expected:
            return False
        # In place (the name never disappears, so no other build can create it meanwhile).
        temp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.new")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY, 0o644)
        try:
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return True

    def delete(self, expected: bytes) -> None:
        if self.read() == expected:
            os.unlink(self.path)
