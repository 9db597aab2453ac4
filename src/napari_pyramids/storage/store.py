"""The storage seam: the keys of one image, on a local disk or in an object store.

Everything above this module (the format parser, the planner, the engine, the preview) reads
and writes an image through a :class:`Store`: keys relative to the image group, joined with
``/`` as zarr names them. A store knows how to fetch a key without trusting it (a chunk file
linked to ``/dev/zero`` or a FIFO, a sparse file of gigabytes), how to write one, and what
the keys' names are for a person (a path or a URL). Where the image's bytes live is decided
once, by :func:`open_store`: a local path gives a :class:`LocalStore`, a URL (``s3://``,
``gs://``, ``https://``) an :class:`~.objectstore.ObjectStore`.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import PyramidError
from ..untrusted import (
    MAX_JSON_BYTES,
    URL_SCHEME,
    check_image_path,
    check_no_links,
    check_regular_file_for_write,
    parse_json,
)

if TYPE_CHECKING:
    from ..ome.consolidated import Patch

# The hidden folder where an update writes each new write unit before renaming it in.
UPDATE_PREFIX = ".napari-pyramids-update-"
# The files zarr v2 and v3 keep for arrays, by zarr format.
ARRAY_METADATA = {2: ".zarray", 3: "zarr.json"}
# Never block on a FIFO, never leak the descriptor into a child, never translate newlines
# (Windows' text mode): each flag where the platform has it.
_UNTRUSTED_READ = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class OversizedError(PyramidError):
    """A stored object is larger than any honest object of its kind can be."""

    def __init__(self, where: str, size: int, limit: int) -> None:
        super().__init__(f"{where} is {size} bytes, more than the {limit} expected")
        self.where, self.size, self.limit = where, size, limit


class StorageUnavailable(PyramidError):  # noqa: N818 - a state, like ImageBusyError's
    """The storage itself refused (credentials, permission, no such bucket, unreachable):
    the message names the image and the fix, whatever key was being read."""


class Store(abc.ABC):
    """The keys of one image group: what the engine, planner and preview read and write."""

    # Block tasks worth running at once to keep this storage busy, when more than the
    # CPU cores (whose count is the default): requests that wait on a network need no core.
    concurrent_tasks: int = 0

    @abc.abstractmethod
    def describe(self, key: str = "") -> str:
        """Where ``key`` is, for messages (a path or a URL)."""

    @abc.abstractmethod
    def get(self, key: str, max_bytes: int) -> bytes | None:
        """The bytes of ``key``, or None if it does not exist.

        Raises :class:`OversizedError` above ``max_bytes`` (without reading past it) and
        :class:`PyramidError` for something no honest key is (a FIFO, a device).
        """

    @abc.abstractmethod
    def set(self, key: str, data: Any) -> None:
        """Store ``data`` (bytes-like) under ``key``, creating what holds it."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key``, if there is one (zarr's fate of an emptied chunk)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether anything (an object, a file, a folder, a link) is stored at ``key``."""

    @abc.abstractmethod
    def objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of the objects under ``prefix``, in key order; links not followed."""

    def stamps(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, stamp) of the objects under ``prefix``: the stamp changes whenever an
        object is written (a disk's modification time in ns, prefixed ``m``; an object
        store's ETag, prefixed ``e``)."""
        for key, size in self.objects(prefix):
            yield key, size, ""

    def unit_writer(self, update_id: str, protected: str) -> Store:
        """This store for an update's writes of whole write units in listed levels: each
        ``set`` replaces its key atomically (a reader sees the old bytes or the new), and
        nothing under ``protected`` (level 0) is ever written."""
        return cast(Store, ProtectedStore(self, protected))

    def finish_units(self, update_id: str) -> None:
        """Remove what :meth:`unit_writer` left once the update is over."""
        return None

    @abc.abstractmethod
    def free_bytes(self) -> int | None:
        """Space left for new levels, if the storage can tell."""

    @abc.abstractmethod
    def parent(self) -> Store | None:
        """The store of the group holding this one, if there is one to read."""

    @abc.abstractmethod
    def enclosing(self) -> Store | None:
        """The store of the folder that holds this group's folder, to write in: None when
        there is none or when this folder is a link (its parent is elsewhere)."""

    @abc.abstractmethod
    def name(self) -> str:
        """The image group's own name (the last component of its path or URL)."""

    @abc.abstractmethod
    def location(self) -> Path | UrlPath:
        """Where the image group is, joinable like a path (``location / "labels"``)."""

    @abc.abstractmethod
    def child(self, rel: str) -> Store:
        """The store of the group at ``rel`` inside this one (a plate's well, a well's field).

        ``rel`` comes from metadata and must already be a checked relative path; a link on
        the way is refused with PyramidError, as for every path a build may write under.
        """

    @abc.abstractmethod
    def folders(self) -> list[str]:
        """Names of the groups or folders directly inside this one, sorted; hidden names
        (``.``) and links skipped."""

    @abc.abstractmethod
    def zarr_store(self, prefix: str, read_only: bool, max_file_bytes: int | None = None) -> Any:
        """A zarr-python store of the array at ``prefix``, for layouts read through zarr."""

    def check_writable(self) -> None:
        """Refuse at once a storage no build can write (HTTP), before any request."""
        return None  # a disk says so on the first write, in one sentence (storage_error)

    @abc.abstractmethod
    def check_write_target(self, key: str, what: str, folder: bool) -> None:
        """Refuse a key a build would write (a level folder, a metadata file) unless the
        write provably lands inside the image: no link on the way, nothing of the wrong kind
        in the way. Raises PyramidError naming ``what``."""

    # The build transaction: how new levels land unlisted and are published, per store kind.

    @abc.abstractmethod
    def lock(self, build_id: str) -> AbstractContextManager[ImageHold]:
        """Hold the image for one build: a second one is refused with ImageBusyError."""

    @abc.abstractmethod
    def recover(self) -> list[str]:
        """Undo (or finish cleaning) interrupted builds; call under the lock."""

    @abc.abstractmethod
    def has_leftovers(self) -> bool:
        """Whether an interrupted build may have left something to undo."""

    @abc.abstractmethod
    def leftovers(self) -> list[str]:
        """Names of what interrupted builds left, for ``info``."""

    @abc.abstractmethod
    def begin_build(self, build_id: str, changes: ImageChanges) -> BuildTransaction:
        """A new build's transaction: where its levels are written, and how they publish."""

    @abc.abstractmethod
    def write_error(self, exc: OSError) -> PyramidError:
        """One sentence the user can act on for a write the storage refused."""

    def read_json(self, key: str, what: str, max_bytes: int = MAX_JSON_BYTES, **caps: int) -> Any:
        """The JSON document at ``key`` parsed with the caps of untrusted metadata, or None."""
        try:
            raw = self.get(key, max_bytes)
        except OversizedError:
            raise PyramidError(
                f"{what}: {self.describe(key)} holds more than {max_bytes} bytes, more than "
                "any zarr metadata document; remove the extra content or restore the file"
            ) from None
        except StorageUnavailable:
            raise
        except PyramidError as exc:
            raise PyramidError(f"{what}: {exc}") from None
        if raw is None:
            return None
        return parse_json(raw, what, self.describe(key), **caps)

    def array_format(self, prefix: str) -> int | None:
        """The zarr format of the array at ``prefix`` (2 or 3), or None if it holds none."""
        for zarr_format in (3, 2):
            if self.is_file(join(prefix, ARRAY_METADATA[zarr_format])):
                return zarr_format
        return None

    def is_file(self, key: str) -> bool:
        """Whether ``key`` holds an object (not a folder)."""
        return self.exists(key)


class ImageHold(Protocol):
    """A held image lock, as the build sees it."""

    def holds(self) -> bool:
        """Whether the image is still ours: a lease can expire under a stopped process."""


@dataclass(frozen=True)
class NewLevel:
    """A level a build adds: its index in the pyramid, its path, its array metadata."""

    index: int
    path: str
    document: dict[str, Any]


@dataclass(frozen=True)
class ImageChanges:
    """Everything a build changes in an image, decided before anything is written.

    The transaction of each kind of store carries it out in its own order: on a disk new
    levels are written in a hidden folder and renamed into place; on an object store they
    are written under their final keys once nothing lists what they replace.
    """

    metadata_file: str
    zarr_format: int
    levels: Sequence[NewLevel]
    aside: Sequence[str]  # existing levels the new ones replace or drop
    intermediate: bytes | None  # the metadata listing level 0 alone, while levels change
    final: bytes  # the metadata listing every level, written last
    extra_files: Sequence[tuple[str, bytes]] = ()  # group metadata new level folders need
    # consolidated metadata documents the publish keeps true at each step
    consolidated: Sequence[ConsolidatedEdit] = ()
    # (key, bytes) of the change record of level 0 (``changes.py``), written once the final
    # metadata is: a build rolled back must not leave a record claiming its levels
    record: tuple[str, bytes] | None = None


@dataclass(frozen=True)
class ConsolidatedEdit:
    """A consolidated metadata document the build keeps true, and how (see
    ``ome/consolidated.py``): the image's own zarr v2 ``.zmetadata`` (``up`` 0) or the
    ``file`` of the group ``up`` folders above the image."""

    up: int
    file: str
    patch: Patch

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "file": self.file, **self.patch.to_json()}


class BuildTransaction(abc.ABC):
    """One build's writes: new levels unlisted until :meth:`publish`, undone if unfinished."""

    store: Store
    committed: bool = False

    @abc.abstractmethod
    def level_key(self, index: int) -> str:
        """Where new level ``index`` is written until it is published (a key of ``store``)."""

    @abc.abstractmethod
    def create(self) -> None:
        """Start the build and write each new level's array metadata document."""

    @abc.abstractmethod
    def publish(self) -> None:
        """Make the new levels listed: old ones (``aside``) out, new ones in, metadata last;
        the consolidated metadata documents follow each step (``changes.consolidated``, see
        :class:`ConsolidatedEdit`)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Clean up after a published build (a failure here leaves the image complete)."""


def encode_json(document: Any, indent: int | None = 2) -> bytes:
    """A metadata document as zarr tools write it: indented UTF-8 JSON."""
    return (json.dumps(document, indent=indent, allow_nan=True) + "\n").encode("utf-8")


def join(*parts: str) -> str:
    """Keys joined with ``/``, empty parts skipped."""
    return "/".join(p for p in parts if p)


class UrlPath(str):
    """A URL that joins like a path in messages and lookups: ``url / "zarr.json"``."""

    __slots__ = ()

    def __truediv__(self, key: str) -> UrlPath:
        return UrlPath(f"{self.rstrip('/')}/{key}")

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


class LocalStore(Store):
    """An image group in a folder on a local or mounted disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalStore, (self.root,))

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def describe(self, key: str = "") -> str:
        return str(self.path(key))

    def get(self, key: str, max_bytes: int) -> bytes | None:
        path = self.path(key)
        try:
            fd = os.open(path, _UNTRUSTED_READ)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PyramidError(f"cannot read {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PyramidError(f"{path} is not a regular file; restore the image's files")
            if info.st_size > max_bytes:
                raise OversizedError(str(path), info.st_size, max_bytes)
            # os.read allocates what it is asked for: ask for the file's size (and one byte
            # more, to see it grow), then in pieces should it have grown meanwhile.
            parts, size, want = [], 0, info.st_size + 1
            while size <= max_bytes:
                part = os.read(fd, min(want, max_bytes + 1 - size))
                want = 2**20
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except OSError as exc:
            raise PyramidError(f"cannot read {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if size > max_bytes:
            raise OversizedError(str(path), size, max_bytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def set(self, key: str, data: Any) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)

    def delete(self, key: str) -> None:
        with suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self.path(key))

    def exists(self, key: str) -> bool:
        return os.path.lexists(self.path(key))

    def is_file(self, key: str) -> bool:
        return self.path(key).is_file()

    def objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        for folder, dirs, files in os.walk(self.path(prefix)):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield Path(path).relative_to(self.root).as_posix(), info.st_size

    def stamps(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        for folder, dirs, files in os.walk(self.path(prefix)):
            dirs.sort()
            base = Path(folder).relative_to(self.root).as_posix()
            for name in sorted(files):
                try:
                    info = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield f"{base}/{name}", info.st_size, f"m{info.st_mtime_ns}"

    def unit_writer(self, update_id: str, protected: str) -> Store:
        scratch = self.root / f"{UPDATE_PREFIX}{update_id}"
        scratch.mkdir(exist_ok=True)
        return cast(Store, ProtectedStore(ReplacingLocalStore(self.root, scratch), protected))

    def finish_units(self, update_id: str) -> None:
        with suppress(FileNotFoundError):
            shutil.rmtree(self.root / f"{UPDATE_PREFIX}{update_id}")

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def parent(self) -> Store | None:
        return LocalStore(self.root.parent)

    def enclosing(self) -> Store | None:
        if self.root.parent == self.root or os.path.islink(self.root):
            return None
        return LocalStore(self.root.parent)

    def name(self) -> str:
        return self.root.name

    def location(self) -> Path:
        return self.root

    def child(self, rel: str) -> Store:
        return LocalStore(check_no_links(self.root, rel, "dataset member"))

    def folders(self) -> list[str]:
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    e.name
                    for e in entries
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise PyramidError(f"cannot list {self.root}: {exc.strerror}") from None

    def zarr_store(self, prefix: str, read_only: bool, max_file_bytes: int | None = None) -> Any:
        from .zarrread import CheckedLocalStore

        return CheckedLocalStore(
            self.path(prefix), read_only=read_only, max_file_bytes=max_file_bytes
        )

    def check_write_target(self, key: str, what: str, folder: bool) -> None:
        if not folder:
            check_regular_file_for_write(self.path(key), what)
            return
        check_no_links(self.root, key, what)
        current = self.root
        for part in key.split("/")[:-1]:
            current = current / part
            if os.path.lexists(current) and not current.is_dir():
                raise PyramidError(
                    f"{what} {key!r} needs the folder {current}, but that is a file; move it "
                    "away and run again. Nothing was written."
                )

    def lock(self, build_id: str) -> AbstractContextManager[ImageHold]:
        from .transaction import ImageLock

        return ImageLock(self.root, build_id)

    def recover(self) -> list[str]:
        from .transaction import recover

        try:
            return recover(self.root)
        except OSError as exc:
            raise self.write_error(exc) from exc

    def has_leftovers(self) -> bool:
        from .transaction import has_leftovers

        return has_leftovers(self.root)

    def leftovers(self) -> list[str]:
        from .transaction import leftover_builds

        return [folder.name for folder in leftover_builds(self.root)]

    def begin_build(self, build_id: str, changes: ImageChanges) -> BuildTransaction:
        from .transaction import BuildFolder

        return BuildFolder(self, build_id, changes)

    def write_error(self, exc: OSError) -> PyramidError:
        from .transaction import storage_error

        return storage_error(exc, self.root)


class ReplacingLocalStore(LocalStore):
    """A folder whose ``set`` replaces a key atomically: the new bytes are written and made
    durable in ``scratch`` (a hidden folder of the image, on the same disk), then renamed
    over the key. Killed at any point, a key holds its old bytes or its new ones."""

    def __init__(self, root: Path, scratch: Path) -> None:
        super().__init__(root)
        self.scratch = scratch

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReplacingLocalStore, (self.root, self.scratch))

    def set(self, key: str, data: Any) -> None:
        from .transaction import atomic_write

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, bytes(data) if not isinstance(data, bytes) else data, self.scratch)


class ProtectedStore:
    """A store whose writes under ``protected`` are refused: an update never writes level 0.
    Everything else is the wrapped store's."""

    def __init__(self, inner: Store, protected: str) -> None:
        self.inner = inner
        self.protected = protected.rstrip("/") + "/"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProtectedStore, (self.inner, self.protected))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _check(self, key: str) -> None:
        if (key + "/").startswith(self.protected):
            raise PyramidError(
                f"refused to write {self.inner.describe(key)}: level 0 is never written"
            )

    def set(self, key: str, data: Any) -> None:
        self._check(key)
        self.inner.set(key, data)

    def delete(self, key: str) -> None:
        self._check(key)
        self.inner.delete(key)


def open_store(
    zarrurl: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None
) -> Store:
    """The store of the image group the user named: the one place that decides the kind.

    A URL (``s3://``, ``gs://``, ``https://``) opens an object store configured from the
    environment (``AWS_*``) and ``storage_options``; anything else is a local path.
    """
    if isinstance(zarrurl, Store):
        return zarrurl
    if isinstance(zarrurl, str) and URL_SCHEME.match(zarrurl):
        from .objectstore import open_object_store

        return open_object_store(zarrurl, storage_options)
    if storage_options:
        raise PyramidError(
            f"storage options {sorted(storage_options)} apply to URLs (s3://, gs://, "
            f"https://), not to the local path {zarrurl!s}; drop them"
        )
    return LocalStore(check_image_path(zarrurl))
