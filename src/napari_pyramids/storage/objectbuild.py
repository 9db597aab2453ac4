"""Building safely in an object store, where nothing can be renamed.

A build never lists a level before all of it is written, and a reader never finds the
metadata listing a level that is not complete:

1. the image is held by a lease (``.napari-pyramids.lock``, created only if absent with a
   conditional write, ``If-None-Match: *``; renewed and taken over with ``If-Match``; see
   ``lease.py``);
2. a journal, ``.napari-pyramids-build-<id>.json``, is written before anything else: the
   level folders this build will write and remove, with a digest of each array metadata
   document it writes, and digests of the metadata documents it may leave;
3. when levels are replaced (overwrite), the metadata is first rewritten to list level 0
   alone, then the old levels are deleted;
4. new levels are written under their final keys, which no metadata lists yet;
5. the metadata listing every level is written last, in one PUT (atomic: S3, GCS and their
   compatible servers never show half an object); the journal is deleted.

The next build finds an interrupted build's journal and removes the level folders it
recorded, under rules that a forged or stale journal cannot turn into a loss: only keys
under the image's own prefix (paths are checked like the metadata's level paths), never
level 0 and never anything the current metadata lists, only while the metadata is one this
build wrote or found, and a level folder only while its array metadata is the one this
build wrote there (or, for a level being replaced, the one it found there).

Unlike on a disk, replaced levels cannot come back: a build interrupted while replacing
levels leaves an image that lists level 0 alone, and running the build again completes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import PyramidError
from ..ome.format import format_of
from ..untrusted import MAX_JSON_BYTES, MAX_JSON_CONTAINERS, MAX_JSON_VALUES, check_level_path
from .lease import MAX_LEASE_BYTES
from .store import BuildTransaction, ImageChanges, encode_json, join

if TYPE_CHECKING:
    from .objectstore import ObjectStore

TOOL = "napari-pyramids"
LOCK_KEY = ".napari-pyramids.lock"
_JOURNAL = re.compile(r"^\.napari-pyramids-build-[0-9a-f]{12}\.json$")
_GROUP_FILES = (".zgroup", "zarr.json")
_JOURNAL_LIMITS = {
    "max_bytes": MAX_JSON_BYTES,
    "max_values": MAX_JSON_VALUES,
    "max_containers": MAX_JSON_CONTAINERS,
}


def is_journal(name: str) -> bool:
    return bool(_JOURNAL.match(name))


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class LeaseStorageError(OSError):
    """A lease request the storage refused (the cause says why)."""


class ObjectLease:
    """The lease of ``lease.py`` as one object, changed only by conditional writes."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key

    def describe(self) -> str:
        return self.store.describe(self.key)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(self.store.client, self.key, *args, **kwargs)
        except Exception as exc:
            if _is_not_supported(exc):
                raise PyramidError(
                    f"{self.describe()}: the storage does not support conditional writes "
                    "(If-None-Match / If-Match), which keep two builds from writing one image "
                    "at once; nothing was written. Use a server that does (AWS S3, MinIO, "
                    "Ceph RGW 18+, Google Cloud Storage, Cloudflare R2)."
                ) from None
            raise LeaseStorageError(str(exc)) from exc

    def _read(self) -> tuple[bytes, str] | None:
        import obstore

        try:
            result = self._call(obstore.get)
        except LeaseStorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        if result.meta["size"] > MAX_LEASE_BYTES:
            return b"", result.meta["e_tag"] or ""  # not a lease of ours: unreadable, expired
        return bytes(result.bytes()), result.meta["e_tag"] or ""

    def create(self, data: bytes) -> bool:
        import obstore

        try:
            self._call(obstore.put, data, mode="create")
        except LeaseStorageError as exc:
            if _refused_condition(exc.__cause__):
                return False
            raise
        return True

    def read(self) -> bytes | None:
        current = self._read()
        return None if current is None else current[0]

    def replace(self, expected: bytes, data: bytes) -> bool:
        import obstore

        current = self._read()
        if current is None or current[0] != expected:
            return False
        try:
            # If-Match: only if nobody changed it since we judged it (two takeovers at once
            # cannot both win).
            self._call(obstore.put, data, mode={"e_tag": current[1]})
        except LeaseStorageError as exc:
            if _refused_condition(exc.__cause__) or isinstance(exc.__cause__, FileNotFoundError):
                return False
            raise
        return True

    def renew(self, expected: bytes, data: bytes) -> bool:
        return self.replace(expected, data)

    def delete(self, expected: bytes) -> None:
        import obstore

        current = self._read()
        if current is not None and current[0] == expected:
            # No conditional DELETE in obstore: a lease that is ours and renewed until now
            # cannot have expired in between.
            self._call(obstore.delete)


def _refused_condition(exc: BaseException | None) -> bool:
    name = type(exc).__name__
    return name in ("AlreadyExistsError", "PreconditionError") or "412" in str(exc)


def _is_not_supported(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotSupportedError" or "NotImplemented" in str(exc)


class ObjectBuild(BuildTransaction):
    """One build's writes in an object store: final keys, metadata last, journal first."""

    def __init__(self, store: ObjectStore, build_id: str, changes: ImageChanges) -> None:
        hold = store.held(build_id)
        # Every write of the build checks first that its lease cannot have been taken over.
        self.store = store.guarded(hold.check_fresh) if hold is not None else store
        self.base = store
        self.build_id = build_id
        self.changes = changes
        self.journal_key = f".napari-pyramids-build-{build_id}.json"
        self.paths = {level.index: level.path for level in changes.levels}
        self.array_file = format_of(changes.zarr_format).array_file
        self.documents = {level.path: encode_json(level.document) for level in changes.levels}
        self.created: list[tuple[str, bytes]] = []
        self.committed = False

    def level_key(self, index: int) -> str:
        return self.paths[index]

    def create(self) -> None:
        store, changes = self.store, self.changes
        original = store.get(changes.metadata_file, MAX_JSON_BYTES)
        self.created = [
            (name, data) for name, data in changes.extra_files if not store.is_file(name)
        ]
        record = {
            "tool": TOOL,
            "build": self.build_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "metadata_file": changes.metadata_file,
            "original_sha256": sha256(original),
            "intermediate_sha256": sha256(changes.intermediate),
            "final_sha256": sha256(changes.final),
            "array_file": self.array_file,
            "levels": [[path, sha256(doc)] for path, doc in self.documents.items()],
            # Levels to remove, each with a digest of its array metadata now: recovery
            # removes only the arrays it recorded, never whatever else holds that name.
            "aside": [
                [path, sha256(store.get(join(path, self.array_file), MAX_JSON_BYTES))]
                for path in changes.aside
            ],
            # Group files of nested level folders; the image's own are never removed.
            "created_files": [[n, sha256(data)] for n, data in self.created if "/" in n],
        }
        # The journal first: from here on anything this build leaves can be found and removed.
        store.set(self.journal_key, encode_json(record))
        if changes.intermediate is not None and changes.intermediate != original:
            store.set(changes.metadata_file, changes.intermediate)
        for path in changes.aside:
            store.delete_under(path)
        for path, document in self.documents.items():
            store.set(join(path, self.array_file), document)

    def publish(self) -> None:
        for name, data in self.created:
            self.store.set(name, data)
        # One PUT: readers see the old document or the new one, never a part.
        self.store.set(self.changes.metadata_file, self.changes.final)
        self.committed = True
        if self.changes.record is not None:
            try:
                self.store.set(*self.changes.record)
            except PyramidError as exc:
                warnings.warn(
                    f"{self.base.url}: the pyramid is built but its change record could not be "
                    f"written ({exc}); the next update recomputes every level",
                    stacklevel=3,
                )

    def finish(self) -> None:
        try:
            self.base.delete(self.journal_key)
        except PyramidError as exc:
            warnings.warn(
                f"{self.base.url}: the pyramid is built but its journal could not be removed "
                f"({exc}); the next build of this image removes it",
                stacklevel=3,
            )


def recover(store: ObjectStore) -> list[str]:
    """Remove what interrupted builds of this image left; call under the lock.

    Returns one line per journal saying what was done. Each step can be interrupted and
    redone: the journal is deleted last.
    """
    from .objectstore import WRITABLE

    if store.kind not in WRITABLE:
        return []
    names, _ = store.top_level()
    report = []
    for name in sorted(n for n in names if is_journal(n)):
        line = _recover_one(store, name)
        if line:
            report.append(line)
    return report


def _recover_one(store: ObjectStore, name: str) -> str | None:
    try:
        record = store.read_json(name, "build journal", **_JOURNAL_LIMITS)
    except PyramidError as exc:
        warnings.warn(f"{store.describe(name)}: {exc}; left alone", stacklevel=3)
        return None
    if record is None:
        return None  # removed meanwhile
    problem = journal_problem(record)
    if problem:
        warnings.warn(
            f"{store.describe(name)}: the journal {problem}, so no napari-pyramids build wrote "
            "it; left alone. Remove it by hand if you know it is safe.",
            stacklevel=3,
        )
        return None
    metadata = store.get(record["metadata_file"], MAX_JSON_BYTES)
    current = sha256(metadata)
    if current == record["final_sha256"]:
        store.delete(name)
        return f"{name}: the build had finished; cleaned up"
    if current not in (record["original_sha256"], record["intermediate_sha256"]):
        warnings.warn(
            f"{store.describe(record['metadata_file'])} changed since the build {name} was "
            "interrupted, so what it lists cannot be told apart from that build's levels: "
            "nothing was removed. Check the image, then remove the journal by hand.",
            stacklevel=3,
        )
        return None
    listed = _listed_levels(store)
    removed = []
    array_file = record["array_file"]
    # Levels being replaced (deleted by the build once the metadata stopped listing them),
    # then the build's own new levels: each only while its array metadata is the recorded
    # one. A deletion cut short removed the metadata last, so a folder without it holds
    # nothing of ours.
    for path, digest in [*record["aside"], *record["levels"]]:
        if digest is None or path in removed or _protected(path, listed):
            continue
        if sha256(store.get(join(path, array_file), MAX_JSON_BYTES)) == digest:
            store.delete_under(path)
            removed.append(path)
    for file_name, digest in record["created_files"]:
        folder = file_name.rsplit("/", 1)[0]
        if (
            not _protected(folder, listed)
            and sha256(store.get(file_name, MAX_JSON_BYTES)) == digest
        ):
            store.delete(file_name)
    store.delete(name)
    return f"{name}: an interrupted build; removed its unlisted levels {removed}"


def _listed_levels(store: ObjectStore) -> list[str]:
    """Every level path the image's metadata lists now, level 0 first."""
    from ..ome.image import read_image

    return list(read_image(store).level_paths)


def _protected(path: str, listed: list[str]) -> bool:
    """Whether removing ``path`` could touch a level the metadata lists (level 0 included)."""
    return any(path == p or p.startswith(path + "/") or path.startswith(p + "/") for p in listed)


def journal_problem(record: Any) -> str | None:
    """Why a journal found in the image must not drive a removal, or None if it may.

    A journal lies inside the image, so a stranger may have written it: accept only what a
    build of ours writes, with level paths that stay inside the image.
    """
    if not isinstance(record, dict) or record.get("tool") != TOOL:
        return "is not one of ours"
    try:
        if record.get("metadata_file") not in (".zattrs", "zarr.json"):
            raise PyramidError(f"names the metadata file {record.get('metadata_file')!r:.80}")
        if record.get("array_file") not in (".zarray", "zarr.json"):
            raise PyramidError(f"names the array file {record.get('array_file')!r:.80}")
        for key in ("original_sha256", "intermediate_sha256", "final_sha256"):
            if not isinstance(record.get(key), str | None):
                raise PyramidError(f"has a malformed {key!r}")
        for key in ("aside", "levels", "created_files"):
            entries = record.get(key)
            if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[1], str | None)
                for e in entries
            ):
                raise PyramidError(f"has a malformed {key!r} list")
        for path, _ in [*record["aside"], *record["levels"]]:
            check_level_path(path, "journal")
        for file_name, _ in record["created_files"]:
            if not isinstance(file_name, str) or "/" not in file_name:
                raise PyramidError(f"lists {file_name!r:.80}, not a group file of a level folder")
            folder, base = file_name.rsplit("/", 1)
            if base not in _GROUP_FILES:
                raise PyramidError(f"lists {file_name!r:.80}, not a group metadata file")
            check_level_path(folder, "journal")
    except PyramidError as exc:
        return str(exc)
    return None
