"""The preview's levels, computed tile by tile off napari's thread, coarse levels first.

napari slices layer data on its UI thread. A lazy level that computes there (reading and
reducing level 0) freezes the viewer for seconds on a big plane, so the preview levels are
:class:`TiledLevel` arrays instead: slicing one returns at once with what is computed so far
and asks background threads for the rest. Missing tiles show a coarser tile scaled up, or
nothing yet; ``on_ready`` is called (from a worker thread) when tiles land, for the viewer
to slice again.

Each tile is computed twice: first a cheap sketch (level 0 sampled with a stride, nearest
neighbour), then exactly, from the exact tiles of the level below with the same
:func:`~napari_pyramids.pyramid.reduce.coarsen` the engine runs. Tiles are aligned on
window boundaries, so an exact tile is byte-identical to the built one. Sketches go first,
coarsest level first, so a first picture is on screen after one strided read of level 0.

Qt-free and napari-free: threads, numpy and a level-0 array-like.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ..pyramid.reduce import coarsen

# Tile length on the Y and X axes at every level: a level-k tile is made of factor x factor
# tiles of level k-1, so the exact computation reuses the finer tiles it produced.
TILE = 256
# Computed tiles kept (least recently used dropped first): the finer levels of a few planes.
CACHE_BYTES = 512 * 2**20
# Tiles computed at once: more only queue behind each other on the executor.
PARALLEL = 2

Key = tuple[int, tuple[int, ...]]  # (level, tile index)
Selection = tuple[Any, ...]  # per axis: an int (dropped axis) or a (start, stop) range


class PreviewClosedError(Exception):
    """The preview was replaced: stop computing its tiles."""


class TilePyramid:
    """The levels of a planned pyramid, tiles computed in ``executor`` on demand.

    ``levels[0]`` is the stored level 0 (any array-like napari reads); the others are
    :class:`TiledLevel` arrays. ``on_ready()`` is called from a worker thread after each
    tile; :meth:`close` stops the work of a preview that is gone.
    """

    def __init__(
        self,
        level0: Any,
        shapes: Sequence[tuple[int, ...]],
        factors: Sequence[int],
        aggregation: str | Callable[..., Any],
        edge: str,
        yx_axes: Sequence[int],
        executor: Executor,
        on_ready: Callable[[], None] = lambda: None,
        cache_bytes: int = CACHE_BYTES,
        source: Any = None,
        reader: Any = None,
    ) -> None:
        self.level0 = level0
        # Tiles read level 0 through ``reader`` (the same values): a dask array napari computes
        # on its thread must not be computed here at the same time (napari's dask cache fails).
        self.reader = level0 if reader is None else reader
        self.source = source  # names level 0 for :meth:`adopt` (None: never shared)
        self.shapes = [tuple(int(n) for n in s) for s in shapes]
        self.factors = tuple(factors)
        self.aggregation, self.edge = aggregation, edge
        self.dtype = np.dtype(level0.dtype)
        self.tile = tuple(TILE if a in yx_axes else 1 for a in range(len(self.shapes[0])))
        self.on_ready = on_ready
        self.error: BaseException | None = None
        self._executor = executor
        self._cache_bytes = cache_bytes
        self._exact: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._sketch: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._jobs: list[tuple[int, int, int, Key]] = []  # (pass, -level, order, key)
        self._queued: set[tuple[int, Key]] = set()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._closed = False

    @property
    def levels(self) -> list[Any]:
        """Level 0, then a :class:`TiledLevel` of each planned level (new views each time).

        The pyramid keeps no reference to its views: they refer to it, and a cycle would
        leave a replaced preview (and its tiles) to Python's rare full garbage collection.
        """
        return [self.level0] + [TiledLevel(self, k) for k in range(1, len(self.shapes))]

    # ------------------------------------------------------------------ reading
    def read(self, level: int, selection: Selection) -> np.ndarray:
        """The best computed values of ``selection`` of ``level`` now; asks for the rest."""
        region = tuple((s, s + 1) if isinstance(s, int) else s for s in selection)
        out = np.zeros(tuple(b - a for a, b in region), dtype=self.dtype)
        for index in self._tiles_over(level, region):
            tile = self._best(level, index)
            if tile is None:
                continue
            _paste(out, region, self._tile_start(index), tile)
        return out[tuple(0 if isinstance(s, int) else slice(None) for s in selection)]

    def computed(self, level: int) -> np.ndarray:
        """The exact values of a whole level, computed in the calling thread (tests, scripts)."""
        if level == 0:
            return np.asarray(self.level0)
        region = tuple((0, n) for n in self.shapes[level])
        return self._assemble(level, region)

    @property
    def busy(self) -> bool:
        """Whether tiles are queued or being computed."""
        with self._lock:
            return bool(self._jobs or self._running)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no tile is queued or being computed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._jobs and not self._running, timeout)

    def close(self) -> None:
        """Stop computing: queued tiles are dropped, a running one stops at its next tile.

        The computed tiles are let go too (up to ``cache_bytes``): napari may still hold
        a view of a replaced preview for a while, and those bytes are for its successor
        (:meth:`adopt`, which comes before the close), not for it.
        """
        with self._lock:
            self._closed = True
            self._jobs.clear()
            self._queued.clear()
            self._exact.clear()
            self._sketch.clear()
            self._bytes = 0
            self._idle.notify_all()

    def adopt(self, other: TilePyramid) -> None:
        """Take over the tiles of ``other``, an earlier preview, that this one would compute.

        Sketches depend only on level 0, the factors and the level's shape; exact tiles also
        on the method and the edges. A change of levels keeps every tile, a change of method
        keeps the sketches, so the viewer is not made to wait for them again.
        """
        if self.source is None or other.source != self.source:
            return
        if other.tile != self.tile or other.factors != self.factors:
            return
        same_method = other.aggregation == self.aggregation and other.edge == self.edge
        common = 0
        while common < min(len(self.shapes), len(other.shapes)) and (
            self.shapes[common] == other.shapes[common]
        ):
            common += 1
        with other._lock:
            sketches = [(k, t) for k, t in other._sketch.items() if k[0] < common]
            exact = [(k, t) for k, t in other._exact.items() if same_method and k[0] < common]
        with self._lock:
            for cache, tiles in ((self._sketch, sketches), (self._exact, exact)):
                for key, tile in tiles:
                    if self._bytes + tile.nbytes > self._cache_bytes:
                        return
                    cache[key] = tile
                    self._bytes += tile.nbytes

    # ------------------------------------------------------------------ tiles
    def _tiles_over(self, level: int, region: Sequence[tuple[int, int]]) -> Any:
        ranges = [range(a // t, -(-b // t)) for (a, b), t in zip(region, self.tile, strict=True)]
        return itertools.product(*ranges)

    def _tile_start(self, index: Sequence[int]) -> tuple[int, ...]:
        return tuple(i * t for i, t in zip(index, self.tile, strict=True))

    def _tile_region(self, level: int, index: Sequence[int]) -> tuple[tuple[int, int], ...]:
        return tuple(
            (i * t, min((i + 1) * t, n))
            for i, t, n in zip(index, self.tile, self.shapes[level], strict=True)
        )

    def _best(self, level: int, index: tuple[int, ...]) -> np.ndarray | None:
        """The exact tile, else its sketch, else a coarser tile scaled up (and ask for it)."""
        key = (level, index)
        with self._lock:
            tile = self._exact.get(key)
            if tile is not None:
                self._exact.move_to_end(key)
                return tile
            sketch = self._sketch.get(key)
            self._queue(1, key)
            if sketch is None:
                self._queue(0, key)
        self._schedule()
        return sketch if sketch is not None else self._scaled_up(level, index)

    def _scaled_up(self, level: int, index: tuple[int, ...]) -> np.ndarray | None:
        for coarser in range(level + 1, len(self.shapes)):
            scale = [f ** (coarser - level) for f in self.factors]
            key = (
                coarser,
                tuple(i * t // s // t for i, t, s in zip(index, self.tile, scale, strict=True)),
            )
            with self._lock:
                tile = self._exact.get(key)
                if tile is None:
                    tile = self._sketch.get(key)
            if tile is None:
                continue
            for axis, s in enumerate(scale):
                if s > 1:
                    tile = np.repeat(tile, s, axis=axis)
            origin = [c * t * s for c, t, s in zip(key[1], self.tile, scale, strict=True)]
            region = self._tile_region(level, index)
            part = tile[
                tuple(slice(a - o, b - o) for (a, b), o in zip(region, origin, strict=True))
            ]
            short = [(0, (b - a) - n) for (a, b), n in zip(region, part.shape, strict=True)]
            return np.pad(part, short, mode="edge") if any(s for _, s in short) else part
        return None

    def _queue(self, phase: int, key: Key) -> None:
        if not self._closed and (phase, key) not in self._queued:
            self._queued.add((phase, key))
            heapq.heappush(self._jobs, (phase, -key[0], next(self._order), key))

    def _schedule(self) -> None:
        with self._lock:
            wanted = min(len(self._jobs), PARALLEL) - self._running
            self._running += max(0, wanted)
        for _ in range(wanted):
            self._executor.submit(self._run_next)

    def _run_next(self) -> None:
        """Compute the most wanted tile (a submitted run counts in ``_running`` already)."""
        with self._lock:
            job = heapq.heappop(self._jobs) if self._jobs and not self._closed else None
            if job is not None:
                phase, _, _, key = job
                self._queued.discard((phase, key))
                done = key in self._exact or (phase == 0 and key in self._sketch)
        try:
            if job is not None and not done:
                if phase == 0:
                    self._store(self._sketch, key, self._sketch_tile(*key))
                else:
                    self._exact_tile(*key)
                self.on_ready()
        except PreviewClosedError:
            pass
        except Exception as exc:  # shown by the widget; the tile stays as it is
            self.error = exc
            self.on_ready()
        finally:
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
            self._schedule()

    def _sketch_tile(self, level: int, index: tuple[int, ...]) -> np.ndarray:
        """Level 0 sampled every ``factor ** level`` pixels: the tile's nearest neighbours."""
        region = self._tile_region(level, index)
        steps = [f**level for f in self.factors]
        read = tuple(
            slice(a * s, min(b * s, n), s)
            for (a, b), s, n in zip(region, steps, self.shapes[0], strict=True)
        )
        part = np.asarray(self.reader[read])
        return part[tuple(slice(0, b - a) for a, b in region)]

    def _exact_tile(self, level: int, index: tuple[int, ...]) -> np.ndarray:
        key = (level, index)
        with self._lock:
            if self._closed:
                raise PreviewClosedError
            tile = self._exact.get(key)
        if tile is not None:
            return tile
        source = tuple(
            (a * f, min(b * f, n))
            for (a, b), f, n in zip(
                self._tile_region(level, index), self.factors, self.shapes[level - 1], strict=True
            )
        )
        block = self._assemble(level - 1, source)
        tile = coarsen(block, self.factors, self.aggregation, self.edge)
        self._store(self._exact, key, tile)
        return tile

    def _assemble(self, level: int, region: Sequence[tuple[int, int]]) -> np.ndarray:
        """``region`` of ``level`` exactly: read from level 0, or from exact tiles."""
        if level == 0:
            return np.asarray(self.reader[tuple(slice(a, b) for a, b in region)])
        out = np.empty(tuple(b - a for a, b in region), dtype=self.dtype)
        for index in self._tiles_over(level, region):
            tile = self._exact_tile(level, index)
            _paste(out, region, self._tile_start(index), tile)
        return out

    def _store(self, cache: OrderedDict[Key, np.ndarray], key: Key, tile: np.ndarray) -> None:
        with self._lock:
            if self._closed:
                raise PreviewClosedError
            if key in cache:
                return
            cache[key] = tile
            self._bytes += tile.nbytes
            if cache is self._exact and key in self._sketch:
                self._bytes -= self._sketch.pop(key).nbytes
            for older in (self._sketch, self._exact):
                while self._bytes > self._cache_bytes and len(older) > 1:
                    self._bytes -= older.popitem(last=False)[1].nbytes


class TiledLevel:
    """One preview level as the array-like napari slices: reading never waits for a tile.

    Indexing with integers and step-1 slices gives another :class:`TiledLevel` (a view);
    ``np.asarray`` gives the values computed so far (see :meth:`TilePyramid.read`).
    """

    def __init__(self, pyramid: TilePyramid, level: int, selection: Selection | None = None):
        self.pyramid, self.level = pyramid, level
        shape = pyramid.shapes[level]
        self.selection: Selection = (
            tuple((0, n) for n in shape) if selection is None else selection
        )
        self.shape = tuple(b - a for s in self.selection if not isinstance(s, int) for a, b in [s])
        self.dtype = pyramid.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        free = [i for i, s in enumerate(self.selection) if not isinstance(s, int)]
        selection = list(self.selection)
        for axis, k in zip(free, key, strict=True):
            start, stop = selection[axis]
            length = stop - start
            if isinstance(k, (int, np.integer)):
                k = int(k) + length if k < 0 else int(k)
                if not 0 <= k < length:
                    raise IndexError(f"index {k} out of range for length {length}")
                selection[axis] = start + k
            elif isinstance(k, slice) and k.step in (None, 1):
                a, b, _ = k.indices(length)
                selection[axis] = (start + a, start + max(a, b))
            else:  # fancy or strided indexing: on the values computed so far
                return np.asarray(self)[key]
        return TiledLevel(self.pyramid, self.level, tuple(selection))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.pyramid.read(self.level, self.selection)
        return values if dtype is None else values.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def computed(self) -> np.ndarray:
        """The exact values of this view, computed in the calling thread (tests, scripts)."""
        region = tuple((s, s + 1) if isinstance(s, int) else s for s in self.selection)
        values = self.pyramid._assemble(self.level, region)
        return values[tuple(0 if isinstance(s, int) else slice(None) for s in self.selection)]


def _paste(
    out: np.ndarray, region: Sequence[tuple[int, int]], start: Sequence[int], tile: np.ndarray
) -> None:
    """Copy the part of ``tile`` (whose first pixel is at ``start``) that lies inside
    ``region`` into ``out`` (which holds ``region``)."""
    src, dst = [], []
    for (a, b), t0, n in zip(region, start, tile.shape, strict=True):
        lo, hi = max(a, t0), min(b, t0 + n)
        src.append(slice(lo - t0, hi - t0))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = tile[tuple(src)]
