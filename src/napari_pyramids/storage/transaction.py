"""Writing safely inside an image group: lock, build folder, journal, atomic publish, rollback.

A build never writes where a reader looks until the data is complete:

1. ``.napari-pyramids.lock`` is taken with the OS's file lock (``flock``, ``msvcrt.locking``:
   dropped when its holder dies, so a crashed build never blocks the next one), or, where
   there is none, held as a lease (``lease.py``);
2. new levels are written into ``.napari-pyramids-build-<id>/levels/<k>``, a hidden folder that
   no metadata lists, beside a ``journal.json`` saying what the build is about to do;
3. publishing first records every move it is about to make in the journal, then moves old
   levels (overwrite) into the build folder behind a metadata document listing level 0
   alone, renames the new ones into place and writes the metadata last, each metadata change
   by write-to-temp-then-rename;
4. the build folder is removed, journal last.

Consolidated metadata (``ome/consolidated.py``) follows the same steps. The image's own
(a v2 ``.zmetadata``; a v3 image's is inside ``zarr.json``) lists level 0 alone while levels
move and every level just before the metadata; groups above the image whose consolidated
metadata lists it (a plate, a collection) list level 0 alone before anything moves (when
levels are replaced) and every level after the metadata, each by write-to-temp-then-rename
in its own folder, under a lock of that folder, since sibling images may edit the same
document. Those edits change only the image's entries, and the
journal records each entry's value before, between and after, so an interrupted build
puts back (or finishes) exactly its own entries, whatever its siblings did meanwhile.

The journal is written before anything else goes into the build folder and removed last, so
a folder of ours without a journal can only hold unpublished new levels (and journal temp
files): it is removed. A folder with anything else and no journal of ours is left alone.

A build interrupted at any point (exception, cancel, SIGKILL, power loss) is undone by the
next build of the same image, from the journal: the metadata goes back to its original bytes,
the renamed levels back where they were. Leftovers without our journal are never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImageBusyError, PyramidError
from ..untrusted import (
    CONSOLIDATED_CAPS,
    MAX_JSON_BYTES,
    MAX_JSON_CONTAINERS,
    MAX_JSON_VALUES,
    ancestor,
    check_regular_file_for_write,
    journal_problem,
)
from .lease import FileLeaseStore, LeaseLock
from .localfs import (
    BINARY,
    CLOEXEC,
    flush_tree,
    fsync_dir,
    has_os_lock,
    open_no_link,
    read_at,
    same_file,
    try_lock,
    unlock_and_remove,
    write_at,
)
from .store import UPDATE_PREFIX, BuildTransaction, ImageChanges, LocalStore, encode_json

TOOL = "napari-pyramids"
LOCK_NAME = ".napari-pyramids.lock"
# Held while one consolidated metadata document is read, edited and replaced.
CONSOLIDATED_LOCK = ".napari-pyramids-consolidated.lock"
CONSOLIDATED_LOCK_SECONDS = 60.0
CONSOLIDATED_TEMP = ".napari-pyramids-consolidated-{build}.tmp"
BUILD_PREFIX = ".napari-pyramids-build-"
JOURNAL = "journal.json"
# The change record, written into the build folder before the levels are flushed (so it is
# durable with them) and renamed beside level 1 once the metadata lists the levels.
STAGED_RECORD = "record.json"
# The metadata document listing every level, written into the build folder before the levels
# are flushed (so it is durable with them) and renamed over the image's once they are placed.
STAGED_METADATA = "metadata.staged"
# ``aside`` (old levels an overwrite moves away) is made only by a build that moves some.
SKELETON = ("levels",)
_JOURNAL_TEMP = re.compile(r"^journal\.json\.[0-9a-f]{32}\.tmp$")
# What a lease (lease.py) leaves when its holder dies while renewing or taking over.
_LEASE_TEMP = re.compile(
    rf"^({re.escape(LOCK_NAME)}|{re.escape(CONSOLIDATED_LOCK)})\.[0-9a-f]{{32}}\.(new|old)$"
)
_UPDATE_FOLDER = re.compile(rf"^{re.escape(UPDATE_PREFIX)}[0-9a-f]{{12}}$")
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
# A journal carries the original metadata document as an escaped JSON string (up to ~4x its
# bytes) plus a few entries per level: the metadata's own caps with room for that.
_JOURNAL_LIMITS = {
    "max_bytes": 4 * MAX_JSON_BYTES + 2**20,
    "max_values": MAX_JSON_VALUES + 10_000,
    "max_containers": MAX_JSON_CONTAINERS + 10_000,
}


class StorageError(PyramidError):
    """The filesystem refused a write (full, read-only, ...); the image was left unchanged."""


def storage_error(exc: OSError, root: Path) -> StorageError:
    """Turn an OSError met while writing into one sentence the user can act on."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        what = "the disk is full"
        fix = "free some space (or choose fewer levels) and run again"
    elif exc.errno in _READ_ONLY_ERRNOS:
        what = "the image is read-only"
        fix = "make it writable or copy it somewhere writable"
    else:
        what = f"a write failed ({exc.strerror or exc})"
        fix = "check the filesystem and run again"
    return StorageError(f"{root}: {what}; {fix}. The image was left unchanged.")


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _fsync_parents(root: Path, rels: Sequence[str]) -> None:
    """Make renames below ``root`` durable before the metadata that depends on them changes."""
    for folder in sorted({(root / rel).parent for rel in rels} | {root}):
        fsync_dir(folder)


def atomic_write(
    target: Path,
    data: bytes,
    scratch: Path,
    temp_name: str | None = None,
    flush_folder: bool = True,
) -> None:
    """Replace ``target`` by ``data`` in one rename; ``scratch`` is a folder on the same disk
    (``temp_name`` names the temporary file there, so that a crash's leftover is known).

    The bytes are flushed before the rename, so ``target`` is never seen torn; the rename is
    flushed too unless ``flush_folder`` is False (a power cut may then undo it)."""
    temp = write_temp(target, data, scratch, temp_name)
    replace_with(temp, target, flush_folder)


def write_temp(
    target: Path, data: bytes, scratch: Path, temp_name: str | None = None, flush: bool = True
) -> Path:
    """The temporary file that :func:`replace_with` renames to ``target``, holding ``data``
    (flushed, unless the caller flushes it with others: ``flush=False``)."""
    temp = scratch / (temp_name or f"{target.name}.{uuid.uuid4().hex}.tmp")
    # O_EXCL refuses any existing name, a symbolic link included.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if flush:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return temp


def replace_with(temp: Path, target: Path, flush_folder: bool = True) -> None:
    """Rename ``temp`` (its bytes already durable) to ``target``, then flush the folder."""
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if flush_folder:
        fsync_dir(target.parent)


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class ImageLock:
    """One build per image at a time, across processes and hosts sharing the filesystem.

    The OS's own lock where there is one (it is dropped when its holder dies, so a crashed
    build never blocks the next); elsewhere a lease in the same file (see ``lease.py``).
    """

    def __init__(self, root: Path, build_id: str, name: str = LOCK_NAME) -> None:
        self.root = root
        self.path = root / name
        self.build_id = build_id
        self._fd: int | None = None
        self._lease: LeaseLock | None = None

    def __enter__(self) -> ImageLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _busy(self, holder: str) -> str:
        return (
            f"{self.root} is being built by another process ({holder}); wait for that build "
            "to finish or cancel it, then run again. Nothing was written."
        )

    def acquire(self) -> None:
        if not has_os_lock():
            lease = LeaseLock(FileLeaseStore(self.path), self.build_id, self._busy("{holder}"))
            try:
                lease.acquire()
            except OSError as exc:
                raise storage_error(exc, self.root) from None
            self._lease = lease
            return
        fd = self._locked_descriptor()
        holder = {
            "tool": TOOL,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "build": self.build_id,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            os.ftruncate(fd, 0)
            write_at(fd, encode_json(holder))
        except BaseException as exc:
            # Give the lock back (file included): a leaked descriptor would hold it forever.
            unlock_and_remove(fd, self.path)
            if isinstance(exc, OSError):
                raise storage_error(exc, self.root) from None
            raise
        self._fd = fd

    def holds(self) -> bool:
        """Whether this build still holds the image (a lease can be lost; an OS lock not)."""
        return self._lease.holds() if self._lease is not None else self._fd is not None

    def _locked_descriptor(self) -> int:
        """An open descriptor of the lock file, holding the OS lock."""
        while True:
            try:
                fd = open_no_link(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PyramidError(
                        f"{self.path} is a symbolic link; remove it and run again"
                    ) from None
                raise storage_error(exc, self.root) from None
            try:
                if not try_lock(fd):
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise ImageBusyError(self._busy(holder))
                # The previous holder may have unlinked the file between our open and lock.
                try:
                    same = same_file(os.fstat(fd), os.lstat(self.path))
                except FileNotFoundError:
                    same = False
            except ImageBusyError:
                raise
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, OSError):
                    raise storage_error(exc, self.root) from None
                raise
            if same:
                return fd
            os.close(fd)

    def release(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()
            return
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # A lock file left behind is harmless (the next build takes it over).
        unlock_and_remove(fd, self.path)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(read_at(fd, 4096) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"


@dataclass
class Journal:
    """What a build did to the image, written before each step so a crash can be undone."""

    build_id: str
    metadata_file: str
    original: bytes | None
    intermediate: bytes | None = None
    final: bytes | None = None
    phase: str = "writing"
    # Written before the publish moves anything, so some may not have happened yet:
    # (path, inode, device) of every new level to rename into place,
    placed: list[tuple[str, int, int]] = field(default_factory=list)
    # (path, name in the build folder) of every old level to move aside.
    moved_aside: list[tuple[str, str]] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)
    created_files: list[tuple[str, str]] = field(default_factory=list)
    # Consolidated metadata documents kept true (ConsolidatedEdit.to_json()).
    consolidated: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": TOOL,
            "build": self.build_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "phase": self.phase,
            "metadata_file": self.metadata_file,
            "original": None if self.original is None else self.original.decode("utf-8"),
            "intermediate_sha256": sha256(self.intermediate),
            "final_sha256": sha256(self.final),
            "placed": self.placed,
            "moved_aside": self.moved_aside,
            "created_dirs": self.created_dirs,
            "created_files": self.created_files,
            "consolidated": self.consolidated,
        }


class BuildFolder(BuildTransaction):
    """The hidden folder of one build inside the image group, published by rename."""

    def __init__(self, store: LocalStore, build_id: str, changes: ImageChanges) -> None:
        self.store = store
        self.changes = changes
        self.root = root = store.root
        self.name = f"{BUILD_PREFIX}{build_id}"
        self.path = root / self.name
        metadata_file = changes.metadata_file
        self.journal = Journal(build_id, metadata_file, read_bytes(root / metadata_file))
        # True once the final metadata is in place: from then on the build has happened.
        self.committed = False

    def level_key(self, index: int) -> str:
        return f"{self.name}/levels/{index}"

    def level_path(self, index: int) -> Path:
        return self.path / "levels" / str(index)

    def create(self) -> None:
        os.mkdir(self.path)
        # The journal first: from here on the folder is recognisably ours (see recover).
        # Neither its bytes nor its rename are flushed: should a power cut lose either, the
        # folder holds no journal (or a torn one, or its temporary file) and only unpublished
        # levels, which recovery removes; the publish flushes its own journal before anything
        # moves.
        self.save()
        for name in SKELETON:
            os.mkdir(self.path / name)
        for level in self.changes.levels:
            self.write_level_document(level.index, level.document, self.changes.zarr_format)

    def save(self) -> None:
        """Write the journal, unflushed (see :meth:`create`)."""
        target = self.path / JOURNAL
        temp = write_temp(target, self._journal_bytes(), self.path, flush=False)
        replace_with(temp, target, flush_folder=False)

    def _journal_bytes(self) -> bytes:
        # Compact: only recovery reads it, and indenting in Python costs more than writing it.
        return encode_json(self.journal.to_json(), indent=None)

    def write_level_document(self, index: int, document: dict[str, Any], zarr_format: int) -> Path:
        folder = self.level_path(index)
        os.mkdir(folder)
        from ..ome.format import format_of

        name = format_of(zarr_format).array_file
        (folder / name).write_bytes(encode_json(document))
        return folder

    def publish(self) -> None:
        """Move old levels aside, rename new ones into place, then write the metadata.

        The journal lists every move before the first one happens; recovery undoes those
        that happened and skips the others, so one durable journal write covers them all.
        Consolidated documents list level 0 alone before anything moves (when the metadata
        does; a group above the image that cannot stops the build), the image's own lists
        every level just before the metadata does, and those of groups above the image
        last (a failure there only warns: the image is built, and they list level 0 alone).
        """
        changes = self.changes
        new_levels = [(level.index, level.path) for level in changes.levels]
        aside, extra_files = changes.aside, changes.extra_files
        intermediate, final = changes.intermediate, changes.final
        consolidated = changes.consolidated
        journal = self.journal
        journal.phase = "publishing"
        journal.intermediate, journal.final = intermediate, final
        journal.moved_aside = [(rel, f"aside/{i}") for i, rel in enumerate(aside)]
        journal.created_dirs = []
        for _, rel in new_levels:
            for parent in map(str, reversed(Path(rel).parents[:-1])):
                if parent not in journal.created_dirs and not (self.root / parent).exists():
                    journal.created_dirs.append(parent)
        journal.placed = []
        for index, rel in new_levels:
            info = os.stat(self.level_path(index))
            journal.placed.append((rel, info.st_ino, info.st_dev))
        created = [(name, data) for name, data in extra_files if not (self.root / name).exists()]
        journal.created_files = [(name, sha256(data)) for name, data in created]
        journal.consolidated = [edit.to_json() for edit in consolidated]
        record = self._stage_record()
        metadata = self.root / journal.metadata_file
        staged = write_temp(metadata, final, self.path, STAGED_METADATA, flush=False)
        journal_bytes = self._journal_bytes()
        journal_temp = write_temp(self.path / JOURNAL, journal_bytes, self.path, flush=False)
        # Level data, the staged record and metadata and the journal's bytes durable in one
        # flush, then the journal's rename, before any rename can make a level reachable.
        flush_tree(self.path)
        replace_with(journal_temp, self.path / JOURNAL)
        own = [edit for edit in journal.consolidated if edit["up"] == 0]
        above = [edit for edit in journal.consolidated if edit["up"] > 0]
        if intermediate is not None:
            # Before anything moves, so a failure here leaves everything as it was: a group
            # that kept listing levels about to be replaced would send readers to them.
            for edit in above:
                self._edit_above_or_stop(edit)
            for edit in own:
                edit_consolidated(self.root, edit, "between", self.path, self.name)
        if intermediate is not None and intermediate != journal.original:
            atomic_write(metadata, intermediate, self.path)
        if journal.moved_aside:
            os.mkdir(self.path / "aside")
        for rel, name in journal.moved_aside:
            os.rename(self.root / rel, self.path / name)
        for rel in journal.created_dirs:
            os.mkdir(self.root / rel)
        for index, rel in new_levels:
            os.rename(self.level_path(index), self.root / rel)
        for name, data in created:
            atomic_write(self.root / name, data, self.path)
        _fsync_parents(self.root, [rel for _, rel in new_levels])
        if journal.moved_aside:
            fsync_dir(self.path / "aside")
        for edit in own:
            edit_consolidated(self.root, edit, "after", self.path, self.name)
        replace_with(staged, metadata)
        self.committed = True
        if record is not None:
            self._place_record(record)
        for edit in above:
            self._edit_above(edit, "after")
        # No journal write marks the build published: the metadata's hash, ``final``, proves
        # it, and a recovery that finds it finishes the edits above and removes the folder.

    def _stage_record(self) -> Path | None:
        """Write the change record into the build folder; a failure only warns (the next
        update then finds no record and recomputes every level)."""
        if self.changes.record is None:
            return None
        key, data = self.changes.record
        try:
            # Not flushed here: the levels' flush that follows makes its bytes durable.
            return write_temp(self.root / key, data, self.path, STAGED_RECORD, flush=False)
        except OSError as exc:
            _warn_no_record(self.root / key, exc)
            return None

    def _place_record(self, staged: Path) -> None:
        """Move the staged record beside level 1, after the metadata listing level 1.

        Its bytes are durable (flushed with the levels); the rename is not flushed: lost in
        a power cut, the image has no record, as when a build is killed before this line, and
        the next update recomputes every level.
        """
        key = self.changes.record[0]
        try:
            os.replace(staged, self.root / key)
        except OSError as exc:
            _warn_no_record(self.root / key, exc)

    def _edit_above(self, edit: dict[str, Any], state: str) -> None:
        """Edit a group's document above the image once the image is built: warn on failure
        (the document then lists the image's levels as they were before or between)."""
        try:
            edit_consolidated(self.root, edit, state, self.path, self.name)
        except (OSError, PyramidError) as exc:
            _warn_not_edited(self.root, edit, exc)

    def _edit_above_or_stop(self, edit: dict[str, Any]) -> None:
        """Make a group's document above the image list level 0 alone, or stop the build."""
        try:
            edit_consolidated(self.root, edit, "between", self.path, self.name)
        except (OSError, PyramidError) as exc:
            where = ancestor(self.root, edit["up"]) / edit["file"]
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PyramidError(
                f"{where}: its consolidated metadata lists levels of {self.root} this build "
                f"replaces, and it cannot be updated ({why}). Fix it (or remove it), then run "
                "again; the image was left unchanged."
            ) from None

    def remove(self) -> None:
        remove_build_folder(self.path)

    def finish(self) -> None:
        try:
            self.remove()
        except OSError as exc:
            warnings.warn(
                f"{self.path}: the pyramid is built but its build folder could not be "
                f"removed ({exc.strerror}); the next build of this image removes it",
                stacklevel=3,
            )


def _warn_no_record(path: Path, exc: OSError) -> None:
    warnings.warn(
        f"{path}: the pyramid is built but its change record could not be written "
        f"({exc.strerror}); the next update recomputes every level",
        stacklevel=5,
    )


def edit_consolidated(
    root: Path, edit: dict[str, Any], state: str, scratch: Path, build_folder: str
) -> None:
    """Bring one consolidated document's entries of the image to ``state`` of ``edit``.

    ``state`` is "between", "after" or "before" (a "between" that is None means "before"),
    or "hide": "between" unless the entries are still as before (what an undo does first).
    Only the edit's entries change; the document is re-read under its folder's lock, and
    left alone (PyramidError) when one of those entries holds none of the three states:
    someone else changed it. The image's own document is replaced through ``scratch`` (the
    build folder); a group's above the image through a temporary file in its folder whose
    name says which build wrote it.
    """
    # Here, not at the top: recovery and the lock (which every update takes) need no numpy.
    from ..ome.consolidated import apply
    from ..ome.format import format_of

    folder = ancestor(root, edit["up"])
    name = edit["file"]
    fmt = format_of(2 if name == ".zmetadata" else 3)
    temp = CONSOLIDATED_TEMP.format(build=build_folder.removeprefix(BUILD_PREFIX))
    with _folder_lock(folder, build_folder):
        if edit["up"]:
            with contextlib.suppress(FileNotFoundError):
                # What this build left when it was killed half-way through a write here.
                if stat.S_ISREG(os.lstat(folder / temp).st_mode):
                    os.unlink(folder / temp)
        document = LocalStore(folder).read_json(name, "consolidated metadata", **CONSOLIDATED_CAPS)
        entries = fmt.consolidated_entries(document)
        if entries is None:
            raise PyramidError(f"{folder / name} no longer holds consolidated metadata")
        before = edit["before"]
        states = [before, *(edit[s] for s in ("between", "after") if edit[s] is not None)]
        for key, original in before.items():
            if entries.get(key) not in [patch.get(key, original) for patch in states]:
                raise PyramidError(
                    f"{folder / name}: its entry {key!r} changed since the build started"
                )
        if state == "hide":
            untouched = all(entries.get(key) == value for key, value in before.items())
            state = "before" if untouched else "between"
        edited = apply(entries, edit[state] if edit[state] is not None else before)
        if edited == entries:
            return
        check_regular_file_for_write(folder / name, "consolidated metadata")
        # Compact, as zarr-python writes .zmetadata: it can hold a whole plate, and Python
        # indents JSON ten times slower than it writes it compact.
        data = encode_json(fmt.with_consolidated_entries(document, edited), indent=None)
        if edit["up"]:
            atomic_write(folder / name, data, folder, temp)
        else:
            atomic_write(folder / name, data, scratch)


@contextlib.contextmanager
def _folder_lock(folder: Path, build_folder: str) -> Iterator[None]:
    """Hold ``folder``'s consolidated metadata lock, waiting for a sibling's edit to end."""
    lock = ImageLock(folder, build_folder, CONSOLIDATED_LOCK)
    deadline = time.monotonic() + CONSOLIDATED_LOCK_SECONDS
    while True:
        try:
            lock.acquire()
            break
        except ImageBusyError:
            if time.monotonic() > deadline:
                raise PyramidError(
                    f"{folder}: its consolidated metadata stayed locked by another build for "
                    f"{CONSOLIDATED_LOCK_SECONDS:.0f} s"
                ) from None
            time.sleep(0.02)
    try:
        yield
    finally:
        lock.release()


def _warn_not_edited(root: Path, edit: dict[str, Any], exc: BaseException) -> None:
    where = ancestor(root, edit["up"]) / edit["file"]
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    warnings.warn(
        f"{where}: its consolidated metadata could not be updated for {root} ({why}); "
        f"readers that trust it see that image's levels as they were. Fix it, then run "
        f"zarr.consolidate_metadata({str(where.parent)!r}).",
        stacklevel=4,
    )


def remove_build_folder(path: Path) -> None:
    """Delete a build folder, its journal last, so a half-deleted folder stays recognisable."""
    for entry in os.scandir(path):
        if entry.name == JOURNAL:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / JOURNAL)
    os.rmdir(path)


def leftover_builds(root: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(BUILD_PREFIX):
            yield Path(entry.path)


def has_leftovers(root: Path) -> bool:
    """Whether a build ran here and did not finish cleaning (a build folder or a lock file)."""
    # One listing: every image of a dataset build is asked this before it is planned.
    return any(
        name == LOCK_NAME or name.startswith(BUILD_PREFIX) or _UPDATE_FOLDER.match(name)
        for name in os.listdir(root)
    )


def _holds_only_new_data(folder: Path, torn_journal: bool = False) -> bool:
    """Whether a journal-less build folder can only hold data of a build that never published.

    Old levels are moved aside only after the journal is written, and the journal is the last
    thing removed; so without a journal, ``aside`` is empty and ``levels`` holds nothing but
    new levels no metadata ever listed (e.g. a build killed before its journal existed, or
    chunk writes that finished after a failed build removed its folder), beside at most a
    staged change record and metadata document (losing them costs nothing: the metadata is
    written again, the next update recomputes every level without a record).

    ``torn_journal``: the folder's journal cannot be read. A build's first journal is not
    flushed (the publish flushes its own before anything moves), so a power cut may leave it
    torn; with nothing else but new data beside it, that build never published either.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name == "levels":
                continue
            if entry.is_dir(follow_symlinks=False) and entry.name == "aside":
                with os.scandir(entry.path) as inside:
                    if any(True for _ in inside):
                        return False
            elif not (
                entry.is_file(follow_symlinks=False)
                and (
                    _JOURNAL_TEMP.match(entry.name)
                    or entry.name in (STAGED_RECORD, STAGED_METADATA)
                    or (torn_journal and entry.name == JOURNAL)
                )
            ):
                return False
    return True


def _holds_only_temp_files(folder: Path) -> bool:
    """Whether an update's folder holds nothing but the temporary files it renames from."""
    with os.scandir(folder) as entries:
        return all(e.is_file(follow_symlinks=False) and e.name.endswith(".tmp") for e in entries)


def recover(root: Path) -> list[str]:
    """Undo (or finish cleaning) every interrupted build of this image; call under the lock.

    Returns one line per leftover folder saying what was done. Folders that carry our prefix
    but no readable journal of ours are left alone with a warning: they may not be ours. Each
    step can be interrupted and redone: a recovery killed half-way is finished by the next.
    """
    report = []
    # One listing for the three kinds of leftovers (their names never overlap), taken under
    # the lock: every build of a dataset's images starts here.
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        if _LEASE_TEMP.match(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            report.append(f"removed {entry.name} (a lease being renewed when its build died)")
    for entry in entries:
        folder = Path(entry.path)
        if (
            _UPDATE_FOLDER.match(entry.name)
            and entry.is_dir(follow_symlinks=False)
            and _holds_only_temp_files(folder)
        ):
            shutil.rmtree(folder)
            report.append(f"removed {entry.name} (an interrupted update's unused copies)")
    for folder in (Path(e.path) for e in entries if e.name.startswith(BUILD_PREFIX)):
        if os.path.islink(folder) or not folder.is_dir():
            warnings.warn(f"{folder} is not a build folder of ours; left alone", stacklevel=2)
            continue
        try:
            # The journal lies inside the image, so a stranger may have forged it: read it
            # with the caps of any untrusted metadata (no FIFO, no /dev/zero, no JSON bomb).
            record = LocalStore(folder).read_json(JOURNAL, "build journal", **_JOURNAL_LIMITS)
            if record is None:
                raise FileNotFoundError(folder / JOURNAL)
            ours = isinstance(record, dict) and record.get("tool") == TOOL
        except FileNotFoundError:
            if _holds_only_new_data(folder):
                remove_build_folder(folder)
                report.append(f"removed {folder.name} (never published, no journal)")
                continue
            ours = False
        except ValueError:
            if _holds_only_new_data(folder, torn_journal=True):
                remove_build_folder(folder)
                report.append(f"removed {folder.name} (never published, torn journal)")
                continue
            ours = False
        except OSError:
            ours = False
        if not ours:
            warnings.warn(
                f"{folder} has no journal of a napari-pyramids build; left alone. Remove it by "
                "hand if you know it is safe.",
                stacklevel=2,
            )
            continue
        problem = journal_problem(root, record)
        if problem:
            warnings.warn(
                f"{folder}: its journal {problem}, so no napari-pyramids build wrote it; left "
                "alone. Remove it by hand if you know it is safe.",
                stacklevel=2,
            )
            continue
        phase = record.get("phase")
        touched = record.get("placed") or record.get("moved_aside")
        if phase == "publishing" or (phase != "published" and touched):
            line, removable = _roll_back(root, folder, record)
        else:
            line, removable = f"removed {folder.name} ({phase})", True
        report.append(line)
        if removable:
            remove_build_folder(folder)
    return report


def _roll_back(root: Path, folder: Path, record: dict[str, Any]) -> tuple[str, bool]:
    """Put the image back as it was before an interrupted publish (or accept a finished one).

    Returns what was done and whether the build folder may now be deleted: it is kept
    whenever it may still hold a level that could not be put back.
    """
    metadata = root / record["metadata_file"]
    current = sha256(read_bytes(metadata))
    original = record["original"]
    original_bytes = None if original is None else original.encode("utf-8")
    edits = record.get("consolidated", [])
    if current == record.get("final_sha256"):
        # Killed after the metadata: finish the edits of the groups above the image.
        _recover_edits(root, folder, edits, "after")
        return f"{folder.name}: the build had finished; cleaned up", True
    if current not in {record.get("intermediate_sha256"), sha256(original_bytes)}:
        warnings.warn(
            f"{metadata} changed since the build {folder.name} was interrupted, so what it "
            f"lists cannot be told apart from that build's levels: nothing was undone and "
            f"{folder} (which may hold replaced levels) was kept. Check the image, then remove "
            "that folder by hand.",
            stacklevel=3,
        )
        return f"{folder.name}: left alone, the metadata changed since", False
    # The metadata is now the original or the intermediate document: neither lists a new
    # level, and the intermediate lists no old one, so levels can move back in any order.
    # Consolidated documents first list what neither state misses (level 0 alone, or the
    # original where no level moves aside), so they never list a level being moved.
    _recover_edits(root, folder, edits, "hide")
    for rel, ino, dev in reversed(record["placed"]):
        target = root / rel
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(target)
            if stat.S_ISDIR(info.st_mode) and (info.st_ino, info.st_dev) == (ino, dev):
                shutil.rmtree(target)
    # Files first: a created file may sit in a created folder (a nested level's group).
    for name, digest in record["created_files"]:
        if sha256(read_bytes(root / name)) == digest:
            os.unlink(root / name)
    for rel in reversed(record["created_dirs"]):
        with contextlib.suppress(OSError):
            os.rmdir(root / rel)
    blocked = []
    for rel, name in reversed(record["moved_aside"]):
        if not os.path.lexists(folder / name):
            continue
        if os.path.lexists(root / rel):
            blocked.append(rel)
        else:
            os.rename(folder / name, root / rel)
    if blocked:
        # Restoring the original metadata now would list whatever sits at those paths.
        warnings.warn(
            f"{root}: cannot put back the old level(s) {blocked} because something now exists "
            f"at that path; they are kept in {folder}. Move them back by hand.",
            stacklevel=3,
        )
        return f"{folder.name}: old levels {blocked} kept in the build folder", False
    _fsync_parents(root, [rel for rel, _ in record["moved_aside"]])
    _recover_edits(root, folder, edits, "before")
    if current != sha256(original_bytes):
        if original_bytes is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(metadata)
        else:
            atomic_write(metadata, original_bytes, folder)
    return f"{folder.name}: interrupted while publishing; the image was restored", True


def _recover_edits(root: Path, folder: Path, edits: list[dict[str, Any]], state: str) -> None:
    """Bring every consolidated document of an interrupted build to ``state``.

    A document someone else changed since is left alone with a warning, as is a group's
    above the image that cannot be written; the image's own must be written (its failure
    raises, and the next build tries again).
    """
    for edit in edits:
        try:
            edit_consolidated(root, edit, state, folder, folder.name)
        except PyramidError as exc:
            _warn_not_edited(root, edit, exc)
        except OSError as exc:
            if edit["up"] == 0:
                raise
            _warn_not_edited(root, edit, exc)
