"""A level's write units, read and written through the store: the engine's one door to data.

:func:`open_level_array` is the one place that decides how a stored array is accessed, from
its strictly parsed metadata (:class:`~napari_pyramids.ome.image.ArrayInfo`):

- :class:`~.chunkio.ChunkArray`: zarr v2 and unsharded v3 chunks, straight to numcodecs;
- :class:`~.shards.ShardArray`: sharded v3 whose shards hold such chunks, a whole shard per
  read and per write;
- :class:`ZarrArray`: any other layout zarr-python reads, one write unit at a time.

Every implementation offers the same small interface (:class:`LevelArray`): its ``shape``,
``dtype``, ``chunks`` (the unit worth reading on its own) and ``write_unit`` (the smallest
region that can be written without touching a neighbour's bytes), ``read``, ``read_parts``
(a region unit by unit, so a block never sits decoded twice in memory) and ``write`` (whole
write units only).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import PyramidError
from ..ome.image import ArrayInfo, OmeZarrImage
from . import chunkio, shards
from .chunkio import open_chunk_array
from .shards import open_shard_array
from .store import ARRAY_METADATA, Store, join

if TYPE_CHECKING:
    import dask.array as da

Region = tuple[slice, ...]


class LevelArray(Protocol):
    """What the engine and the preview need of a stored level."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    write_unit: tuple[int, ...]

    def read(self, region: Region) -> np.ndarray: ...

    def read_parts(self, region: Region) -> Iterator[tuple[tuple[int, ...], np.ndarray]]: ...

    def write(self, region: Region, data: np.ndarray, write_empty: bool) -> None: ...


def open_level_array(store: Store, key: str, info: ArrayInfo) -> LevelArray:
    """The array at ``key`` of ``store``, described by ``info``, for block reads and writes."""
    direct = open_chunk_array(store, key, info) or open_shard_array(store, key, info)
    if direct is not None:
        return direct
    return ZarrArray(store, key, info)


def open_level(image: OmeZarrImage, path: str) -> da.Array:
    """A stored level of ``image`` as a read-only dask array (one dask chunk per zarr unit)."""
    import dask.array as da

    from .zarrread import open_array_checked

    array = open_array_checked(image.store, path)
    return da.from_array(array, chunks=array.shards or array.chunks, name=False)


def is_direct(info: ArrayInfo) -> bool:
    """Whether arrays like ``info`` are read without zarr-python (no import, no zarr checks)."""
    return chunkio.supports(info) or shards.supports(info)


class ZarrArray:
    """An array read and written through zarr-python, for the layouts chunkio does not cover.

    Writes go one write unit at a time: zarr gathers the unit writes of one assignment and
    lets the others run on when one fails (a full disk, say), which would write into a
    build after it was undone. One unit per assignment leaves nothing running.
    """

    def __init__(self, store: Store, key: str, info: ArrayInfo) -> None:
        self.store, self.key, self.info = store, key, info
        self.shape, self.dtype = info.shape, info.dtype
        self.chunks, self.write_unit = info.write_unit, info.write_unit
        self._reader: Any = None
        self._writer: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (ZarrArray, (self.store, self.key, self.info))

    def read(self, region: Region) -> np.ndarray:
        if self._reader is None:
            from .zarrread import open_array_checked

            self._reader = open_array_checked(self.store, self.key)
        return np.asarray(self._reader[region])

    def read_parts(self, region: Region) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        yield (0,) * len(region), self.read(region)

    def write(self, region: Region, data: np.ndarray, write_empty: bool) -> None:
        if self._writer is None:
            import zarr

            array = zarr.open_array(store=self.store.zarr_store(self.key, False), mode="r+")
            # open_array drops its ``config`` argument when the array exists (zarr 3.1).
            self._writer = array.with_config({"write_empty_chunks": write_empty})
        for unit in unit_regions(region, self.write_unit, self.shape):
            inside = tuple(
                slice(u.start - r.start, u.stop - r.start)
                for u, r in zip(unit, region, strict=True)
            )
            self._writer[unit] = data[inside]


def read_sampled(array: LevelArray, selection: tuple[slice, ...]) -> np.ndarray:
    """``array[selection]`` for slices with a positive step, read unit by unit.

    Only the units (``array.chunks``) holding a sampled value are read, each narrowed to its
    sampled span, so a strided read of a whole level costs one unit in memory at a time.
    Plain numpy and the store: no dask graph (whose scheduling leaves reference cycles
    behind for Python's garbage collector on every read).
    """
    axes = []
    for s, n, unit in zip(selection, array.shape, array.chunks, strict=True):
        start, stop, step = s.indices(n)
        if step < 1:
            raise ValueError(f"only positive steps are read, not {step}")
        pieces = []  # (where the piece goes in the result, the span it reads)
        first = start
        while first < stop:
            end = min(stop, (first // unit + 1) * unit)  # the end of first's unit
            last = first + (end - 1 - first) // step * step  # its last sampled index
            pieces.append(((first - start) // step, slice(first, last + 1)))
            first = last + step
        axes.append((pieces, step, len(range(start, stop, step))))
    out = np.empty(tuple(count for _, _, count in axes), dtype=array.dtype)
    for parts in itertools.product(*(pieces for pieces, _, _ in axes)):
        span = tuple(read for _, read in parts)
        values = array.read(span)[tuple(slice(None, None, step) for _, step, _ in axes)]
        out[tuple(slice(at, at + n) for (at, _), n in zip(parts, values.shape, strict=True))] = (
            values
        )
    return out


def unit_regions(
    region: Region, unit: tuple[int, ...], shape: tuple[int, ...]
) -> Iterator[Region]:
    """The write units inside ``region`` (which must cover them whole), row-major."""
    ranges = [range(r.start // u, -(-r.stop // u)) for r, u in zip(region, unit, strict=True)]
    for index in itertools.product(*ranges):
        yield tuple(
            slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(index, unit, shape, strict=True)
        )


def check_zarr_reads(store: Store, info: ArrayInfo) -> None:
    """Let zarr itself parse the metadata, so that nothing it rejects surfaces mid-build.

    Only for layouts read through zarr-python: the direct ones never reach zarr, and
    importing zarr costs ~0.1 s of every build's start-up.
    """
    if is_direct(info):
        return
    import zarr

    where = store.describe(join(info.path, ARRAY_METADATA[info.zarr_format]))
    try:
        zarr.open_array(store=store.zarr_store(info.path, True), mode="r")
    except PyramidError:
        raise
    except Exception as exc:  # zarr raises many types for metadata it refuses
        detail = " ".join(str(exc).split())[:200]
        raise PyramidError(
            f"{where}: not supported by zarr {zarr.__version__} ({type(exc).__name__}: "
            f"{detail}). Fix the metadata or convert the image."
        ) from None
