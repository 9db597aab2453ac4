"""What changed in level 0 since its pyramid was built: the change record and its comparison.

A build leaves ``.napari-pyramids-record.json`` in the folder of level 1's array, written once
its levels are published: the options that made the pyramid, level 0's shape and write unit,
and for each stored level-0 write unit (chunk, or shard) what identifies its content now:

- on a disk, its size and modification time in nanoseconds: one ``stat`` per unit, so
  finding that nothing changed costs a directory listing, not a read of level 0. Copies made
  with ``cp -a``, ``rsync -a``, ``shutil.copytree`` or ``mv`` keep both; a copy that does not
  makes every unit look changed, and the update then recomputes every level (correct, only
  slower). A unit written so shortly before the record that a later write could share its
  timestamp (within ``RACY_NS``, as git's "racily clean" index entries) also gets a BLAKE2b
  digest of its bytes, and is compared by content next time;
- in an object store, its size and ETag, which the server changes with every PUT (for a
  single-part upload it is the MD5 of the bytes), from the same listing.

Hashing every unit instead would be robust to any copy but reads all of level 0: a full
build's worth of I/O to find that nothing changed.

Why inside level 1's array: zarr-python 3 lists a group's members by listing the group's
folder and warns about every entry that is neither an array nor a group (any file or folder
of ours beside ``zarr.json``), while inside an array it looks only at the keys of the chunks
(or shards) the array's grid names; tensorstore, ome-zarr-models, ome-zarr-py (napari-ome-zarr)
and ngff-zarr do the same. Level 1 is ours: a build writes it whole and replaces (or removes)
it whole, so the record goes with the levels it describes. A build publishes level 1 without
a record, then the metadata listing it, then the record: killed in between, the image has no
record and the next update rebuilds in full; a record never outlives the level 1 it was
written beside. The record is small (a few dozen bytes per unit) and untrusted like any file
of the image: a malformed one is ignored with a warning and the update recomputes every
level. A record beside levels another tool wrote since (same folder names) no longer agrees
with the metadata's provenance and is ignored (``update._record_matches``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import PyramidError
from .storage import Store, encode_json
from .untrusted import MAX_JSON_BYTES, check_level_path

if TYPE_CHECKING:
    from .ome.image import ArrayInfo

RECORD_NAME = ".napari-pyramids-record.json"
RECORD_VERSION = 1
TOOL = "napari-pyramids"
# A unit written less than this before the record may be rewritten within the same tick of
# the filesystem's clock (FAT: 2 s, HFS+: 1 s, ext4: a few ms): compared by content instead.
RACY_NS = 2 * 10**9
MAX_RECORD_BYTES = 512 * 2**20
# A unit's state: (size, stamp, BLAKE2b digest or None).
UnitState = tuple[int, str, str | None]
Box = tuple[slice, ...]
# The options that shape the levels, as the record keeps them.
OPTION_KEYS = (
    "num_levels",
    "coarsening_xy",
    "coarsening_z",
    "method",
    "edge",
    "chunksize",
    "labels",
    "open_array_kwargs",
)


UNCHANGED, UPDATED, REBUILT = "unchanged", "updated", "rebuilt"


@dataclass(frozen=True)
class UpdateReport:
    """What an update did to one image.

    Attributes
    ----------
    status
        ``"unchanged"`` (nothing rewritten), ``"updated"`` (the units listed in
        ``written`` were recomputed) or ``"rebuilt"`` (levels 1..n recomputed in full, for
        the reason in ``note``).
    changed
        Level-0 write units found changed (or met by the caller's regions).
    written
        Write units recomputed, per level index.
    grown
        Whether level 0 had grown and every level was extended.
    note
        Why the pyramid was rebuilt in full, or what else the user should know.
    """

    zarrurl: str
    status: str
    changed: int = 0
    written: dict[int, int] = field(default_factory=dict)
    grown: bool = False
    note: str = ""

    def describe(self) -> str:
        if self.status == UNCHANGED:
            return f"{self.zarrurl}: level 0 unchanged; nothing rewritten"
        if self.status == REBUILT:
            return f"{self.zarrurl}: levels rebuilt in full ({self.note})"
        units = ", ".join(f"level {k}: {n}" for k, n in sorted(self.written.items()))
        grown = "; level 0 grew, every level extended" if self.grown else ""
        return (
            f"{self.zarrurl}: {self.changed} level-0 write unit(s) changed; rewritten {units}"
            f"{grown}"
        )


@dataclass(frozen=True)
class ChangeRecord:
    """Level 0 as it was when its pyramid was last made consistent with it."""

    level0_path: str
    shape: tuple[int, ...]
    unit: tuple[int, ...]
    options: dict[str, Any]
    units: dict[str, UnitState]  # key relative to level 0's folder -> state
    # BLAKE2b digests of the image's metadata file and of every level's array metadata as
    # they were when the levels were consistent with level 0 (None in older records).
    documents: dict[str, str] | None = None

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "tool": TOOL,
            "version": RECORD_VERSION,
            "level0": self.level0_path,
            "shape": list(self.shape),
            "unit": list(self.unit),
            "options": self.options,
            "units": {key: list(state) for key, state in sorted(self.units.items())},
        }
        if self.documents is not None:
            document["documents"] = dict(sorted(self.documents.items()))
        return encode_json(document, indent=None)


def record_key(level1_path: str) -> str:
    """Where the record of a pyramid whose level 1 is at ``level1_path`` is kept."""
    return f"{level1_path.rstrip('/')}/{RECORD_NAME}"


def unit_grid(info: ArrayInfo) -> tuple[int, ...]:
    return tuple(-(-n // u) for n, u in zip(info.shape, info.write_unit, strict=True))


def unit_keys(info: ArrayInfo) -> dict[str, tuple[int, ...]]:
    """Every write unit of ``info``: its key inside the array's folder -> its grid index."""
    return {
        info.chunk_key(index): index for index in itertools.product(*map(range, unit_grid(info)))
    }


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def snapshot(store: Store, info: ArrayInfo) -> dict[str, UnitState]:
    """The state of every stored write unit of level 0 now (missing units are absent)."""
    now = time.time_ns()
    keys = unit_keys(info)
    prefix = info.path.rstrip("/") + "/"
    states: dict[str, UnitState] = {}
    for key, size, stamp in store.stamps(info.path):
        rel = key[len(prefix) :] if key.startswith(prefix) else None
        if rel is None or rel not in keys:
            continue
        states[rel] = (size, stamp, _racy_digest(store, key, stamp, now))
    return states


def _racy_digest(store: Store, key: str, stamp: str, now: int) -> str | None:
    if not stamp.startswith("m") or int(stamp[1:]) < now - RACY_NS:
        return None
    data = store.get(key, 2**40)
    return None if data is None else digest(data)


def changed_units(
    store: Store, info: ArrayInfo, before: Mapping[str, UnitState], now: Mapping[str, UnitState]
) -> list[str]:
    """Keys (inside level 0's folder) of the units whose content may differ from ``before``."""
    changed = []
    for rel in sorted(set(before) | set(now)):
        old, new = before.get(rel), now.get(rel)
        if old is None or new is None or old[0] != new[0]:
            changed.append(rel)
        elif old[2] is not None:
            data = store.get(f"{info.path}/{rel}", 2**40)
            if data is None or digest(data) != old[2]:
                changed.append(rel)
        elif old[1] != new[1]:
            changed.append(rel)
    return changed


def unit_box(info: ArrayInfo, index: Sequence[int]) -> Box:
    return tuple(
        slice(i * u, min((i + 1) * u, n))
        for i, u, n in zip(index, info.write_unit, info.shape, strict=True)
    )


def grown_boxes(old: Sequence[int], new: Sequence[int]) -> list[Box]:
    """The level-0 regions added when the shape grew from ``old`` to ``new``."""
    boxes = []
    for axis, (a, b) in enumerate(zip(old, new, strict=True)):
        if b > a:
            boxes.append(
                tuple(slice(a, b) if i == axis else slice(0, n) for i, n in enumerate(new))
            )
    return boxes


def dependent_units(
    boxes: Iterable[Box],
    cumulative: Sequence[int],
    shape: Sequence[int],
    unit: Sequence[int],
) -> list[tuple[int, ...]]:
    """The write units of a level (``cumulative`` factors from level 0, ``shape``, write
    ``unit``) holding a pixel whose level-0 window meets one of ``boxes``.

    A level pixel ``p`` summarises level-0 pixels ``[p*F, (p+1)*F)`` (the last one fewer
    with ``edge="keep"``), whatever the method: no method looks past its own window.
    """
    found: set[tuple[int, ...]] = set()
    for box in boxes:
        ranges = []
        for s, f, n, u in zip(box, cumulative, shape, unit, strict=True):
            first, last = s.start // f, min(-(-s.stop // f), n)
            if first >= last:
                break
            ranges.append(range(first // u, -(-last // u)))
        else:
            found.update(itertools.product(*ranges))
    return sorted(found)


def read_record(store: Store, level1_path: str) -> ChangeRecord | None:
    """The pyramid's change record, or None if it has none or one that is not ours (warned)."""
    key = record_key(level1_path)
    try:
        document = store.read_json(
            key,
            "change record",
            max_bytes=MAX_RECORD_BYTES,
            max_values=2**26,
            max_containers=2**24,
        )
    except PyramidError as exc:
        warnings.warn(f"{exc}; ignored, every level will be recomputed", stacklevel=3)
        return None
    if document is None:
        return None
    try:
        return _parse(document)
    except (KeyError, TypeError, ValueError, AttributeError):
        warnings.warn(
            f"{store.describe(key)} is not a change record of napari-pyramids; ignored, "
            "every level will be recomputed",
            stacklevel=3,
        )
        return None


def _parse(document: Any) -> ChangeRecord:
    if document["tool"] != TOOL or document["version"] != RECORD_VERSION:
        raise ValueError("not ours")
    units: dict[str, UnitState] = {}
    for key, state in document["units"].items():
        size, stamp, digest_ = state
        if not isinstance(size, int) or not isinstance(stamp, str):
            raise ValueError(key)
        if digest_ is not None and not isinstance(digest_, str):
            raise ValueError(key)
        units[str(key)] = (size, stamp, digest_)
    shape = tuple(int(n) for n in document["shape"])
    unit = tuple(int(n) for n in document["unit"])
    options = document["options"]
    if len(shape) != len(unit) or not isinstance(options, dict):
        raise ValueError("shape")
    if set(options) != set(OPTION_KEYS):
        raise ValueError("options")
    documents = document.get("documents")
    if documents is not None and not (
        isinstance(documents, dict) and all(isinstance(v, str) for v in documents.values())
    ):
        raise ValueError("documents")
    return ChangeRecord(str(document["level0"]), shape, unit, options, units, documents)


def options_record(plan: Any, options: Any) -> dict[str, Any]:
    """The options of a carried-out plan, as a record keeps them (None for a caller's
    function, which an update cannot call again)."""
    return {
        "num_levels": len(plan.levels),
        "coarsening_xy": options.coarsening_xy,
        "coarsening_z": options.coarsening_z,
        "method": plan.method,
        "edge": plan.edge,
        "chunksize": None if options.chunksize is None else list(options.chunksize),
        "labels": options.labels,
        "open_array_kwargs": dict(options.open_array_kwargs),
    }


def record_of_build(
    plan: Any, options: Any, documents: Mapping[str, bytes | None]
) -> tuple[str, bytes] | None:
    """The record a build leaves beside its level 1: level 0 as the build is about to read
    it, and ``documents`` (key -> bytes) as the build publishes them."""
    if callable(plan.aggregation) or len(plan.levels) < 2:
        return None
    info = plan.image.level0
    record = ChangeRecord(
        info.path,
        info.shape,
        info.write_unit,
        options_record(plan, options),
        snapshot(plan.image.store, info),
        document_digests(documents),
    )
    return record_key(plan.levels[1].path), record.to_bytes()


def published_documents(
    plan: Any, metadata: bytes | None, rewritten: bool
) -> dict[str, bytes | None]:
    """The metadata documents a record keeps digests of, as they are once ``plan`` is carried
    out: the image's metadata file (``metadata``, or as stored when None) and every level's
    array metadata (the planned new levels' as written when ``rewritten``, else as stored)."""
    image = plan.image
    store = image.store
    array_file = image.format.array_file
    documents = {image.metadata_file: metadata or store.get(image.metadata_file, MAX_JSON_BYTES)}
    new = {level.path: level for level in plan.new_levels} if rewritten else {}
    for path in (level.path for level in plan.levels):
        key = f"{path}/{array_file}"
        level = new.get(path)
        documents[key] = (
            encode_json(level.document) if level is not None else store.get(key, MAX_JSON_BYTES)
        )
    return documents


def document_digests(documents: Mapping[str, bytes | None]) -> dict[str, str] | None:
    """What a record keeps of the metadata documents (None when one of them is missing)."""
    if any(data is None for data in documents.values()):
        return None
    return {key: digest(data) for key, data in documents.items() if data is not None}


def unchanged_since_record(store: Store) -> bool:
    """Whether an update of the image in ``store`` (a local folder) would find nothing to do,
    decided read-only, without the lock, numpy or zarr: True only when no build or update is
    running or left anything, the image's metadata file and every level's array metadata are
    byte for byte those the record saw, and level 0 holds exactly the recorded units with
    their recorded sizes and stamps. Anything else (an old record, a stray file, a unit the
    record compares by content) returns False and the update decides under the lock.

    Without the lock a build may run meanwhile: the checks before and after see its lock
    file or leftovers; one that ran wholly in between left levels consistent with level 0,
    which is what True says.
    """
    try:
        if store.has_leftovers():
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the update under the lock warns, once
            same = _same_as_record(store)
        return same and not store.has_leftovers()
    except (PyramidError, OSError, KeyError, IndexError, TypeError, ValueError):
        return False


def _same_as_record(store: Store) -> bool:
    metadata_file, array_file = "zarr.json", "zarr.json"
    group = store.read_json(metadata_file, "group metadata")
    if group is not None:
        multiscales = group["attributes"]["ome"]["multiscales"]
    else:
        metadata_file, array_file = ".zattrs", ".zarray"
        multiscales = store.read_json(metadata_file, "group metadata")["multiscales"]
    paths = [check_level_path(d["path"], "multiscales") for d in multiscales[0]["datasets"]]
    if len(paths) < 2:
        return False
    record = read_record(store, paths[1])
    if record is None or record.documents is None or record.level0_path != paths[0]:
        return False
    keys = [metadata_file, *(f"{path}/{array_file}" for path in paths)]
    if set(record.documents) != set(keys):
        return False
    for key in keys:
        data = store.get(key, MAX_JSON_BYTES)
        if data is None or digest(data) != record.documents[key]:
            return False
    prefix = paths[0].rstrip("/") + "/"
    seen = 0
    for key, size, stamp in store.stamps(paths[0]):
        rel = key[len(prefix) :] if key.startswith(prefix) else key
        state = record.units.get(rel)
        if state is None:
            if rel in (".zarray", ".zattrs", "zarr.json"):
                continue
            return False
        if state != (size, stamp, None):
            return False
        seen += 1
    return seen == len(record.units)


def boxes_of_units(info: ArrayInfo, keys: Iterable[str]) -> Iterator[Box]:
    index_of = unit_keys(info)
    for key in keys:
        index = index_of.get(key)
        if index is not None:
            yield unit_box(info, index)


def check_regions(regions: Any, shape: Sequence[int]) -> list[Box]:
    """A caller's level-0 regions as boxes with definite bounds, refused when malformed."""
    if isinstance(regions, tuple) and all(isinstance(r, slice) for r in regions):
        regions = [regions]
    boxes = []
    for region in regions:
        if not isinstance(region, tuple) or len(region) != len(shape):
            raise PyramidError(
                f"each region must be a tuple of {len(shape)} slices (one per axis of level 0, "
                f"shape {tuple(shape)}), got {region!r:.120}"
            )
        box = []
        for axis, (s, n) in enumerate(zip(region, shape, strict=True)):
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise PyramidError(
                    f"region {region!r:.120}: axis {axis} must be a slice with step 1"
                )
            start, stop, _ = s.indices(n)
            box.append(slice(start, max(start, stop)))
        if all(b.stop > b.start for b in box):
            boxes.append(tuple(box))
    return boxes


def updated_units(
    record: ChangeRecord, info: ArrayInfo, current: Mapping[str, UnitState], boxes: list[Box]
) -> dict[str, UnitState]:
    """The record's units with those meeting ``boxes`` taken from ``current``."""
    units = dict(record.units)
    index_of = unit_keys(info)
    touched = set()
    for box in boxes:
        ranges = [
            range(s.start // u, -(-s.stop // u)) for s, u in zip(box, info.write_unit, strict=True)
        ]
        touched.update(itertools.product(*ranges))
    for key, index in index_of.items():
        if index in touched:
            if key in current:
                units[key] = current[key]
            else:
                units.pop(key, None)
    return units


def total_units(info: ArrayInfo) -> int:
    return math.prod(unit_grid(info))
